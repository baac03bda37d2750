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

__all__ = ["ExportError", "compare_detections", "example_inputs", "export_detector",
           "export_symbol", "initialized_params", "mxnet_outputs", "run_onnx", "unsupported_ops"]


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
    try:
        graph = MXNetGraph().create_onnx_graph_proto(
            symbol, params, shapes, [TensorProto.FLOAT] * len(shapes), opset_version=opset,
            dynamic=False)
    except NotImplementedError as err:  # a converter that does not handle these attributes
        raise ExportError(str(err).strip()) from None
    _order_outputs(graph, symbol)
    # mx2onnx lists every parameter as a graph input too (IR < 4 style); as plain initializers
    # they are constants, which onnxruntime folds and fuses
    constants = {t.name for t in graph.initializer}
    data_inputs = [i for i in graph.input if i.name not in constants]
    del graph.input[:]
    graph.input.extend(data_inputs)
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


# --- parity with MXNet ------------------------------------------------------------------------

def initialized_params(detector, input_shapes, seed=0):
    """(arg_params, aux_params) of the test graph from the detector's initializer, as a
    training run starts (no checkpoint needed: for trying the export and for parity tests)."""
    import mxnet as mx

    module = mx.mod.Module(detector.get_test_symbol(), data_names=list(input_shapes),
                           label_names=None, context=mx.cpu())
    module.bind(data_shapes=list(input_shapes.items()), for_training=False)
    mx.random.seed(seed)
    np.random.seed(seed)
    module.init_params(detector.initializer())
    return module.get_params()


def mxnet_outputs(detector, arg_params, aux_params, inputs):
    """The test graph's outputs (numpy arrays, list_outputs order) for {input name: array}."""
    import mxnet as mx

    symbol = detector.get_test_symbol()
    module = mx.mod.Module(symbol, data_names=list(inputs), label_names=None,
                           context=mx.cpu())
    module.bind(data_shapes=[(k, v.shape) for k, v in inputs.items()], for_training=False)
    needed = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    module.set_params({k: v for k, v in arg_params.items() if k in needed},
                      {k: v for k, v in aux_params.items() if k in needed})
    module.forward(mx.io.DataBatch([mx.nd.array(v) for v in inputs.values()]), is_train=False)
    return [out.asnumpy() for out in module.get_outputs()]


def example_inputs(cfg, input_shapes, seed=0):
    """{data, im_info} of the synthetic shapes images (simpledet.data.shapes), rendered at a
    size that the loader's resize scales by a non-unit factor, preprocessed as the test
    loader does (resize, normalize, pad to the bucket)."""
    from simpledet.data.shapes import render_image
    from simpledet.data.transforms import normalize_pad_chw, resize_image

    batch, _, bucket_h, bucket_w = input_shapes["data"]
    rng = np.random.default_rng(seed)
    data = np.zeros((batch, 3, bucket_h, bucket_w), np.float32)
    im_info = np.zeros((batch, 3), np.float32)
    for b in range(batch):
        image, _ = render_image(rng, 150 + 10 * b, 190)
        resized, im_info[b] = resize_image(image[:, :, ::-1], min(bucket_h, bucket_w),
                                           max(bucket_h, bucket_w))
        normalize_pad_chw(resized, cfg.backbone.pixel_mean, cfg.backbone.pixel_std,
                          (bucket_h, bucket_w), out=data[b])
    return {name: {"data": data, "im_info": im_info}[name] for name in input_shapes}


def compare_detections(reference, exported, rtol=1e-3):
    """Compares two dets arrays (B, D, 6) [x1, y1, x2, y2, score, class] row by row.

    Returns:
        {"detections": rows used in the reference, "same_classes": whether the class columns
        (hence the used rows) are equal, "max_rel_box": max |a - b| / max(|a|, 1) over the
        used rows' box coordinates, "max_abs_score": max score difference, "ok": same classes
        and both differences within ``rtol``}.
    """
    reference, exported = np.asarray(reference), np.asarray(exported)
    if reference.shape != exported.shape:
        return {"detections": int((reference[..., 5] >= 1).sum()), "same_classes": False,
                "max_rel_box": float("inf"), "max_abs_score": float("inf"), "ok": False}
    used = reference[..., 5] >= 1
    same = bool(np.array_equal(reference[..., 5], exported[..., 5]))
    ref_boxes, got_boxes = reference[used][:, :4], exported[used][:, :4]
    rel = np.abs(ref_boxes - got_boxes) / np.maximum(np.abs(ref_boxes), 1.0)
    score = np.abs(reference[used][:, 4] - exported[used][:, 4])
    max_rel = float(rel.max()) if rel.size else 0.0
    max_score = float(score.max()) if score.size else 0.0
    return {"detections": int(used.sum()), "same_classes": same, "max_rel_box": max_rel,
            "max_abs_score": max_score,
            "ok": same and max_rel <= rtol and max_score <= rtol}
