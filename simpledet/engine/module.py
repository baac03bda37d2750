"""The bound graph: an MXNet BucketingModule with one executor set per bucket shape.

The loader pads images to a few static bucket shapes (landscape / portrait); each shape gets its
own bound executors, sharing parameters, gradients and the optimizer with the first one, so a
graph is bound once per bucket and never re-planned. Batches are split over the contexts along
axis 0 (every training input has the image as axis 0).
"""
import logging
import math

import numpy as np

logger = logging.getLogger(__name__)


def bucket_key(batch, data_names):
    """The bucket of a batch: its image (height, width)."""
    return tuple(int(v) for v in batch[data_names[0]].shape[2:4])


def to_data_batch(batch, data_names):
    """A loader batch (dict of numpy arrays) -> mx.io.DataBatch with a bucket key.

    Raises:
        KeyError: naming the graph inputs the batch lacks.
    """
    import mxnet as mx

    missing = [name for name in data_names if name not in batch]
    if missing:
        raise KeyError(f"the batch has no {missing}; the graph needs inputs {list(data_names)}, "
                       f"the batch has {sorted(batch)}")
    arrays = [mx.nd.array(batch[name], dtype=batch[name].dtype) for name in data_names]
    descs = [mx.io.DataDesc(name, a.shape, dtype=a.dtype) for name, a in zip(data_names, arrays)]
    return mx.io.DataBatch(data=arrays, label=None, bucket_key=bucket_key(batch, data_names),
                           provide_data=descs, provide_label=None)


class GraphModule:
    """A symbol bound per bucket over a list of contexts.

    Args:
        symbol: the graph (train: a Group of MakeLoss outputs; test: the detections).
        data_names: its data inputs, in batch-dict keys.
        contexts: list of mx contexts.
        fixed_param_names: parameters not to update (training only).
        for_training: bind with gradients.
    """

    def __init__(self, symbol, data_names, contexts, fixed_param_names=(), for_training=True):
        self.symbol = symbol
        self.data_names = list(data_names)
        self.contexts = list(contexts)
        self.for_training = for_training
        self.output_names = [n.removesuffix("_output") for n in symbol.list_outputs()]

        self._fixed_param_names = list(fixed_param_names) if for_training else None
        self._module = None  # built at bind time: BucketingModule needs the first bucket key
        self.bound = False

    def _sym_gen(self, _key):
        return self.symbol, self.data_names, None

    @property
    def param_names(self):
        inputs = set(self.data_names)
        return [n for n in self.symbol.list_arguments() if n not in inputs]

    @property
    def aux_names(self):
        return self.symbol.list_auxiliary_states()

    def bind(self, data_batch):
        """Binds the first bucket (its shapes define the shared memory pool)."""
        import mxnet as mx

        self._module = mx.mod.BucketingModule(
            self._sym_gen, default_bucket_key=data_batch.bucket_key, context=self.contexts,
            logger=logger, fixed_param_names=self._fixed_param_names)
        self._module.bind(data_shapes=data_batch.provide_data, label_shapes=None,
                          for_training=self.for_training, force_rebind=False)
        self.bound = True

    def param_shapes(self):
        """name -> shape of every parameter and aux state (after bind)."""
        executor = self._current._exec_group.execs[0]
        arg_params, aux_params = executor.arg_dict, executor.aux_dict
        shapes = {k: tuple(v.shape) for k, v in arg_params.items() if k not in self.data_names}
        shapes.update({k: tuple(v.shape) for k, v in aux_params.items()})
        return shapes

    def init_params(self, initializer, arg_params=None, aux_params=None, allow_missing=True):
        self._module.init_params(initializer=initializer, arg_params=arg_params,
                                 aux_params=aux_params, allow_missing=allow_missing,
                                 force_init=True, allow_extra=False)

    def init_optimizer(self, kvstore, optimizer_params):
        self._module.init_optimizer(kvstore=kvstore, optimizer="sgd",
                                    optimizer_params=optimizer_params)

    @property
    def _current(self):
        return self._module._curr_module

    @property
    def optimizer(self):
        return self._current._optimizer

    def forward_backward(self, data_batch):
        self._module.forward_backward(data_batch)

    def forward(self, data_batch):
        self._module.forward(data_batch, is_train=self.for_training)

    def update(self):
        self._module.update()

    def output_arrays(self):
        """Per output, the list of per-context NDArrays of the last forward."""
        return self._module.get_outputs(merge_multi_context=False)

    def outputs_numpy(self):
        """Per output, the per-context results concatenated along axis 0, as numpy."""
        return [np.concatenate([a.asnumpy() for a in per_ctx], axis=0)
                for per_ctx in self.output_arrays()]

    def mean_outputs(self):
        """name -> mean over contexts (and elements) of each output: the loss values."""
        values = {}
        for name, per_ctx in zip(self.output_names, self.output_arrays()):
            values[name] = float(np.mean([a.asnumpy().mean() for a in per_ctx]))
        return values

    def gradient_arrays(self):
        """The gradient NDArrays of the current bucket: every trained parameter, every context
        (after backward; fixed parameters have none)."""
        return [grad for per_context in self._current._exec_group.grad_arrays
                for grad in per_context if grad is not None]

    def gradient_norm(self):
        """L2 norm over all trained parameters of the batch-mean gradient on this machine:
        per parameter the contexts' gradients summed, then divided by the context count
        (each context's losses are means over its own images)."""
        import mxnet as mx

        by_dtype = {}
        for grads in self._current._exec_group.grad_arrays:
            if not grads or grads[0] is None:
                continue
            total = grads[0] if len(grads) == 1 else mx.nd.add_n(
                *[g.as_in_context(grads[0].context) for g in grads])
            by_dtype.setdefault(total.dtype, []).append(total)
        # one multi_sum_sq per dtype instead of square + sum per array: the per-array ops
        # cost ~10 % of a quickstart step (clipping measures the norm every step); its float32
        # accumulation is within ~3e-4 of float64 per array, ~1e-4 on the norm
        sums = [mx.nd.sum(mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).astype("float64"))
                for arrays in by_dtype.values()]
        if not sums:
            return 0.0
        return math.sqrt(sum(float(s.asscalar()) for s in sums)) / len(self.contexts)

    def named_gradients(self):
        """[(name, gradient NDArray)] of every trained parameter on the first context."""
        group = self._current._exec_group
        return [(name, grads[0]) for name, grads in zip(group.param_names, group.grad_arrays)
                if grads and grads[0] is not None]

    def get_params(self):
        """(arg_params, aux_params) copied from the devices (name -> NDArray on CPU)."""
        return self._module.get_params()

    def set_params(self, arg_params, aux_params, allow_missing=False):
        self._module.set_params(arg_params, aux_params, allow_missing=allow_missing,
                                force_init=True, allow_extra=True)

    def save_optimizer_states(self, path):
        self._current.save_optimizer_states(path)

    def load_optimizer_states(self, path):
        self._current.load_optimizer_states(path)
