"""Export of a detector's test graph to an ONNX file, and running that file with onnxruntime.

The graph goes through MXNet's own exporter (``mxnet.onnx``, mx2onnx): stock MXNet ops use its
converters, SimpleDet's custom ops the lowerings of simpledet.export.onnx_ops (registered on
import). The file has the test symbol's inputs (``data`` (B, 3, Hb, Wb) float32 normalized
pixels, ``im_info`` (B, 3)) at the static shapes given to the export, and its outputs (Faster
R-CNN: ``dets`` (B, max_det, 6) [x1, y1, x2, y2, score, class], rows of -1 when unused), so the
tester's decoding (simpledet.detectors.base.decode_detections) applies to onnxruntime's
outputs unchanged.

mxnet 1.9.1's exporter reads ``onnx.mapping``, which onnx removed in 1.15;
:func:`_ensure_onnx_mapping` puts an equivalent module in its place when it is missing.
"""
import json
import os
import sys
import types

import numpy as np

__all__ = ["ExportError", "export_symbol", "export_detector", "run_onnx", "unsupported_ops"]


class ExportError(Exception):
    """The graph cannot be exported (missing package, op without converter, bad config)."""


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package (the 'export' extra: "
                          "pip install -e \".[cpu,export]\")") from None
    _ensure_onnx_mapping(onnx)
    from simpledet.export import onnx_ops

    onnx_ops._register()
    return onnx


def _ensure_onnx_mapping(onnx):
    """Provides ``onnx.mapping`` (removed in onnx 1.15) for mxnet 1.9.1's exporter."""
    if hasattr(onnx, "mapping"):
        return
    from onnx import TensorProto, helper

    mapping = types.ModuleType("onnx.mapping")
    mapping.TENSOR_TYPE_TO_NP_TYPE, mapping.NP_TYPE_TO_TENSOR_TYPE = {}, {}
    for _, tensor_type in TensorProto.DataType.items():
        try:
            np_type = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type))
        except (KeyError, TypeError, ValueError):
            continue
        mapping.TENSOR_TYPE_TO_NP_TYPE[tensor_type] = np_type
        mapping.NP_TYPE_TO_TENSOR_TYPE.setdefault(np_type, tensor_type)
    onnx.mapping = mapping
    sys.modules["onnx.mapping"] = mapping


def unsupported_ops(symbol, opset=None):
    """[(op, node name)] of the symbol's nodes that no registered converter handles."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    from simpledet.export.onnx_ops import OPSET

    _import_onnx()
    opset = opset or OPSET
    known = set()
    for version, converters in MXNetGraph.registry_.items():
        if version <= opset:
            known.update(converters)
    return [(n["op"], n["name"]) for n in json.loads(symbol.tojson())["nodes"]
            if n["op"] != "null" and n["op"] not in known]


def _graph_inputs(symbol, params):
    """The symbol's data inputs (variables that are not parameters), in the order mx2onnx
    assigns shapes to them (its JSON node order)."""
    return [n["name"] for n in json.loads(symbol.tojson())["nodes"]
            if n["op"] == "null" and n["name"] not in params]


def export_symbol(symbol, arg_params, aux_params, input_shapes, path, opset=None):
    """Writes ``symbol`` with its parameters as an ONNX model.

    Args:
        symbol: an MXNet test symbol.
        arg_params / aux_params: name -> NDArray (those the symbol uses are embedded).
        input_shapes: {data input name: shape}, every input of the symbol that is not a
            parameter (float32).
        path: the .onnx file to write.
        opset: ONNX opset (default simpledet.export.onnx_ops.OPSET).

    Returns:
        the onnx.ModelProto written.

    Raises:
        ExportError: onnx is missing, an op has no converter, a parameter or an input shape
            is missing.
    """
    onnx = _import_onnx()
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from onnx import TensorProto, helper

    from simpledet.export.onnx_ops import OPSET

    opset = opset or OPSET
    missing_ops = unsupported_ops(symbol, opset)
    if missing_ops:
        ops = sorted({op for op, _ in missing_ops})
        raise ExportError(f"no ONNX lowering for {', '.join(ops)} (node "
                          f"{missing_ops[0][1]!r}); exportable: the graph's stock MXNet ops and "
                          f"{', '.join(_lowered_ops())}")
    arguments = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    params = {k: v for k, v in {**arg_params, **aux_params}.items() if k in arguments}
    inputs = _graph_inputs(symbol, params)
    unknown = [n for n in inputs if n not in input_shapes]
    if unknown:
        params_like = [n for n in unknown if n.endswith(("_weight", "_bias", "_gamma", "_beta",
                                                         "_moving_mean", "_moving_var"))]
        if params_like:
            raise ExportError(f"the parameters lack {params_like[:5]} ({len(params_like)} in "
                              f"all): not a checkpoint of this graph")
        raise ExportError(f"no shape given for the graph inputs {unknown}")
    shapes = [tuple(int(d) for d in input_shapes[n]) for n in inputs]
    graph = MXNetGraph().create_onnx_graph_proto(
        symbol, params, shapes, [TensorProto.FLOAT] * len(shapes), opset_version=opset,
        dynamic=False)
    _order_outputs(graph, symbol)
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="simpledet",
                              ir_version=helper.find_min_ir_version_for(opset_ids))
    onnx.checker.check_model(model)
    path = os.path.abspath(str(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return model


def _onnx_output_name(mx_output):
    """The ONNX name mx2onnx gives a symbol output ('x_output' -> 'x', 'x_output1' -> 'x1')."""
    import re

    if mx_output.endswith("_output"):
        return mx_output[:-len("_output")]
    if re.search(r"_output[0-9]$", mx_output):
        return mx_output[:-len("_output0")] + mx_output[-1]
    return mx_output


def _order_outputs(graph, symbol):
    """Puts the graph's outputs in the symbol's output order (mx2onnx sorts them by name)."""
    by_name = {o.name: o for o in graph.output}
    wanted = [_onnx_output_name(n) for n in symbol.list_outputs()]
    if sorted(wanted) != sorted(by_name):
        raise ExportError(f"the ONNX graph's outputs {sorted(by_name)} are not the symbol's "
                          f"{wanted}")
    ordered = [by_name[n] for n in wanted]
    del graph.output[:]
    graph.output.extend(ordered)


def _lowered_ops():
    from simpledet.export.onnx_ops import LOWERED_OPS

    return LOWERED_OPS


def export_detector(detector, arg_params, aux_params, path, batch_size=1, bucket=None):
    """Exports a detector's test graph at a static input shape.

    Args:
        detector: a simpledet.detectors.base.Detector (its config must be fp32).
        arg_params / aux_params: its trained (or initialized) parameters.
        path: the .onnx file.
        batch_size: images per run.
        bucket: (Hb, Wb) padded input size (default: the config's landscape bucket).

    Returns:
        ({input name: shape}, onnx.ModelProto).
    """
    from simpledet.engine.build import bucket_shapes

    precision = getattr(detector.cfg, "precision", "fp32")
    if precision != "fp32":
        raise ExportError(f"precision {precision!r}: export the fp32 graph (--set "
                          f"precision=fp32); the parameters are fp32 either way")
    bucket = tuple(bucket) if bucket else bucket_shapes(detector.cfg)[0]
    shapes = detector.test_data_shapes(batch_size, *bucket)
    model = export_symbol(detector.get_test_symbol(), arg_params, aux_params, shapes, path)
    return shapes, model


def run_onnx(model, inputs):
    """Runs an ONNX model (path or ModelProto) with onnxruntime on CPU.

    Args:
        inputs: {input name: float32 array}.

    Returns:
        the list of outputs (numpy arrays), in the model's output order.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running the ONNX file needs 'onnxruntime' (the 'export' extra: "
                          "pip install -e \".[cpu,export]\")") from None
    if not isinstance(model, (str, os.PathLike)):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: np.ascontiguousarray(inputs[n], np.float32) for n in names})
