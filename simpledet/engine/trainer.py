"""The training loop: one loop, hooks around each step, checkpoints that resume exactly.

::

    trainer = build_trainer(cfg, detector, loader, contexts)   # or Trainer(...) directly
    trainer.resume()            # optional: continue from the latest checkpoint
    trainer.train()

Per iteration ``i`` (0-based): hooks' ``before_step``, ``mx.random`` reseeded from
(seed, i) so graph randomness does not depend on where a run was resumed, ``step(module,
batch, i, lr)`` (forward, backward, NaN check, update: an :class:`~simpledet.engine.steps.SgdStep`,
or for precision fp16 a :class:`~simpledet.engine.steps.LossScaledStep` with dynamic loss
scaling), hooks' ``after_step``. The optimizer is MXNet's SGD with momentum, weight decay,
optional gradient clipping and ``multi_precision`` (fp32 master weights should parameters be
fp16; the mixed-precision graphs of simpledet.models.precision keep them float32 anyway and
cast inside the graph); it reads the lr from the schedule by its update count, which starts at
the resumed iteration. MXNet's SGD applies no weight decay to parameters whose name
does not end in ``_weight`` or ``_gamma`` (biases, BatchNorm betas); BatchNorm gammas are
decayed, as in SimpleDet.

Gradients: each context's losses are means over its own images, the kvstore sums gradients over
contexts and machines, so ``rescale_grad = 1 / (contexts * machines)`` makes the update the
gradient of the mean over the whole batch.
"""
import logging
import random
import re
from dataclasses import asdict

import numpy as np

from simpledet.engine import checkpoint as ckpt
from simpledet.engine.module import GraphModule, to_data_batch
from simpledet.engine.pretrained import check_shapes, fit_shapes
from simpledet.engine.schedule import ScheduleLRScheduler
from simpledet.engine.steps import LossScaledStep, SgdStep

logger = logging.getLogger("simpledet.train")


def step_seed(seed, iteration):
    """The mx.random seed of one iteration."""
    return (int(seed) * 1_000_003 + int(iteration)) % (2 ** 31 - 1)


def match_fixed_params(param_names, patterns):
    """Parameters matched by any of the anchored regexes (re.match: anchored at the start).

    Patterns that match nothing are logged as warnings (a typo would silently train a layer
    meant to stay fixed).
    """
    compiled = [re.compile(p) for p in patterns]
    fixed = [n for n in param_names if any(p.match(n) for p in compiled)]
    for pattern in compiled:
        if not any(pattern.match(n) for n in param_names):
            logger.warning("fixed-parameter pattern %r matches no parameter", pattern.pattern)
    return fixed


def default_initializer():
    """The one initializer of every detector (simpledet.detectors.base.default_initializer):
    He (MSRA) Gaussian, fan-out; variables with an '__init__' attribute (set by the builders,
    e.g. Normal(0.01) for heads) keep their own."""
    from simpledet.detectors.base import default_initializer as detector_default

    return detector_default()


def effective_kvstore(kvstore, contexts):
    """The kvstore to create: nccl needs GPUs, so CPU contexts use 'device' instead. A kvstore
    object (a distributed worker's, created once by distributed.join) is used as it is."""
    if not isinstance(kvstore, str):
        return kvstore
    if kvstore == "horovod":
        raise NotImplementedError("kvstore 'horovod' is not supported yet; use 'device' or "
                                  "'nccl' on one machine, 'dist_sync' across machines")
    if kvstore == "nccl" and all(c.device_type == "cpu" for c in contexts):
        logger.warning("kvstore 'nccl' needs GPUs; using 'device' for CPU contexts")
        return "device"
    return kvstore


class Trainer:
    """Trains a symbolic loss graph.

    Args:
        symbol: mx.sym.Group of MakeLoss outputs named '<name>_loss'.
        data_names: graph inputs, keys of the loader's batches.
        contexts: list of mx contexts; batches are split along axis 0.
        loader: iterable of batch dicts with state_dict() / load_state_dict() (its position);
            iterating again continues with the next epoch.
        schedule: LrSchedule.
        experiment_dir: where checkpoints (and the hooks' files) go.
        fixed_param_names: parameters not updated.
        kvstore: MXNet kvstore type (unused with one context on one machine), or a kvstore
            object (distributed workers).
        momentum, weight_decay, clip_gradient: SGD settings (clip_gradient None: off).
        num_machines: workers of a dist kvstore (gradient rescaling).
        seed: seeds mx.random, numpy and Python's random.
        max_iter: stop after this many iterations (default schedule.max_iter).
        images_per_iteration: for img/s (default: the batch size of the first batch).
        initializer: mx initializer of parameters the initial params do not cover.
        initial_params: (arg_params, aux_params) loaded before training (pretrained weights).
        initial_params_source: where initial_params come from (the file), for messages.
        initial_params_strict: an initial entry whose shape differs from the model's is an
            error (``pretrain_strict``); False initializes that parameter instead, with a warning.
        hooks: list of Hook.
        step: the step object (default SgdStep()).
    """

    def __init__(self, *, symbol, data_names, contexts, loader, schedule, experiment_dir,
                 fixed_param_names=(), kvstore="device", momentum=0.9, weight_decay=1e-4,
                 clip_gradient=None, num_machines=1, seed=0, max_iter=None,
                 images_per_iteration=None, initializer=None, initial_params=None,
                 initial_params_source="initial parameters", initial_params_strict=True,
                 hooks=(), step=None):
        self.step = step or SgdStep()
        # The step may train a changed graph with inputs of its own (fp16: the loss scale).
        symbol = self.step.prepare_symbol(symbol)
        self.data_names = list(data_names) + [n for n in self.step.extra_data_names
                                              if n not in data_names]
        self.module = GraphModule(symbol, self.data_names, contexts, fixed_param_names)
        self.contexts = list(contexts)
        self.loader = loader
        self.schedule = schedule
        self.experiment_dir = str(experiment_dir)
        self.fixed_param_names = list(fixed_param_names)
        self.kvstore = effective_kvstore(kvstore, self.contexts)
        self.optimizer_settings = {"momentum": momentum, "wd": weight_decay,
                                   "clip_gradient": clip_gradient}
        self.num_machines = int(num_machines)
        self.seed = int(seed)
        self.max_iter = int(max_iter if max_iter is not None else schedule.max_iter)
        self.images_per_iteration = images_per_iteration
        self.initializer = initializer
        self.initial_params = initial_params
        self.initial_params_source = str(initial_params_source)
        self.initial_params_strict = bool(initial_params_strict)
        self.hooks = list(hooks)
        self.start_iteration = 0
        self.iteration = 0  # completed iterations
        self.last_checkpoint_iteration = None
        self.last_result = None
        self._resume_from = None

    # ---- resume ---------------------------------------------------------------------------
    def resume(self, folder=None):
        """Continues from a checkpoint (the experiment's latest when folder is None).

        Restores parameters, optimizer state, the step's state (the fp16 loss scale), the
        iteration and the loader position; the learning rate follows the schedule from that
        iteration on. Without a folder, newer checkpoints that do not load (a truncated file)
        are skipped with a warning.

        Returns:
            the iteration training continues from.

        Raises:
            CheckpointError: no checkpoint, or none that loads.
        """
        if folder is None:
            checkpoint, skipped = ckpt.load_latest_checkpoint(self.experiment_dir)
            for err in skipped:
                logger.warning("checkpoint %s is unreadable (%s); resuming from the last "
                               "complete one, %s", err.folder, err.reason, checkpoint.path)
        else:
            checkpoint = ckpt.load_checkpoint(folder)
        folder = checkpoint.path
        saved_schedule = checkpoint.state.get("schedule")
        if saved_schedule is not None and saved_schedule != _jsonable(asdict(self.schedule)):
            logger.warning("the schedule differs from the checkpoint's: %s (saved) vs %s (now); "
                           "continuing with the current one", saved_schedule,
                           asdict(self.schedule))
        if "loader" in checkpoint.state and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(checkpoint.state["loader"])
        self.step.load_state_dict(checkpoint.state.get("step", {}))
        self._resume_from = checkpoint
        self.start_iteration = self.iteration = checkpoint.iteration
        self.last_checkpoint_iteration = checkpoint.iteration
        logger.info("resuming from %s (iteration %d)", folder, checkpoint.iteration)
        return checkpoint.iteration

    # ---- setup ----------------------------------------------------------------------------
    def _seed_everything(self):
        import mxnet as mx

        mx.random.seed(self.seed)
        np.random.seed(self.seed % (2 ** 32))
        random.seed(self.seed)

    def _prepare(self, data_batch):
        """Binds the graph to the first batch, initializes parameters and the optimizer."""
        self.module.bind(data_batch)
        shapes = self.module.param_shapes()
        if self._resume_from is not None:
            checkpoint = self._resume_from
            check_shapes({**checkpoint.arg_params, **checkpoint.aux_params}, shapes,
                         checkpoint.path)
            self.module.init_params(self.initializer or default_initializer(),
                                    checkpoint.arg_params, checkpoint.aux_params,
                                    allow_missing=False)
        else:
            arg_params, aux_params = fit_shapes(*(self.initial_params or ({}, {})), shapes,
                                                self.initial_params_source,
                                                strict=self.initial_params_strict)
            self.module.init_params(self.initializer or default_initializer(), arg_params,
                                    aux_params, allow_missing=True)
        workers = len(self.contexts) * self.num_machines
        self.module.init_optimizer(self.kvstore, dict(
            learning_rate=self.schedule.base_lr,
            lr_scheduler=ScheduleLRScheduler(self.schedule),
            begin_num_update=self.start_iteration,
            rescale_grad=1.0 / workers,
            multi_precision=True,
            **{k: v for k, v in self.optimizer_settings.items() if v is not None}))
        if self._resume_from is not None and self._resume_from.optimizer_file:
            self.module.load_optimizer_states(self._resume_from.optimizer_file)
        if self.images_per_iteration is None:
            self.images_per_iteration = data_batch.data[0].shape[0] * self.num_machines

    # ---- the loop -------------------------------------------------------------------------
    def _batches(self):
        """Batches forever, epoch after epoch (the loader continues where it stopped)."""
        while True:
            yielded = False
            for batch in self.loader:
                yielded = True
                yield batch
            if not yielded:
                raise RuntimeError("the loader yielded no batch for a whole epoch")

    def train(self):
        """Runs iterations start_iteration..max_iter-1.

        Returns:
            the last StepResult (None if nothing ran).

        Raises:
            NonFiniteLossError: a loss became NaN/inf (message names the iteration and loss).
        """
        import mxnet as mx

        if self.iteration >= self.max_iter:
            logger.info("nothing to do: iteration %d >= max_iter %d", self.iteration,
                        self.max_iter)
            return None
        self._seed_everything()
        for hook in self.hooks:
            hook.before_train(self)
        batches = self._batches()
        try:
            while self.iteration < self.max_iter:
                batch = next(batches)
                batch = {**batch, **self.step.extra_inputs(len(batch[self.data_names[0]]))}
                data_batch = to_data_batch(batch, self.data_names)
                if not self.module.bound:
                    self._prepare(data_batch)
                iteration = self.iteration
                for hook in self.hooks:
                    hook.before_step(self, iteration)
                mx.random.seed(step_seed(self.seed, iteration))
                result = self.step(self.module, data_batch, iteration,
                                   self.schedule.lr_at(iteration))
                self.iteration = iteration + 1
                self.last_result = result
                for hook in self.hooks:
                    hook.after_step(self, result)
            mx.nd.waitall()
            for hook in self.hooks:
                hook.after_train(self)
        finally:
            batches.close()
            if hasattr(self.loader, "close"):
                self.loader.close()
        return self.last_result

    # ---- checkpoints ----------------------------------------------------------------------
    def checkpoint_state(self):
        """The JSON part of a checkpoint: loader position, schedule, seed, ..."""
        state = {"schedule": _jsonable(asdict(self.schedule)), "seed": self.seed,
                 "max_iter": self.max_iter, "contexts": [str(c) for c in self.contexts]}
        if hasattr(self.loader, "state_dict"):
            state["loader"] = _jsonable(self.loader.state_dict())
        if self.step.state_dict():
            state["step"] = _jsonable(self.step.state_dict())  # e.g. the fp16 loss scale
        return state

    def save_checkpoint(self):
        """Writes checkpoint iter_<iteration> (params, optimizer state, loader position)."""
        import mxnet as mx

        # MXNet's BatchNorm updates its moving statistics in the backward pass without telling
        # the engine it writes them, so a copy could read the previous iteration's: wait first.
        mx.nd.waitall()
        arg_params, aux_params = self.module.get_params()
        folder = ckpt.save_checkpoint(self.experiment_dir, self.iteration, arg_params,
                                      aux_params, self.checkpoint_state(),
                                      self.module.save_optimizer_states)
        self.last_checkpoint_iteration = self.iteration
        logger.info("checkpoint: %s", folder)
        return folder


def _jsonable(value):
    """Tuples -> lists, numpy scalars -> Python numbers (what a JSON round trip gives)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def default_step(cfg):
    """The step of ``cfg.precision``: dynamic loss scaling for fp16, the plain SGD step for fp32
    and bf16 (bfloat16 has float32's exponent range: its gradients need no scaling)."""
    max_norm = cfg.train.clip_grad_norm
    if cfg.precision != "fp16":
        return SgdStep(max_norm)
    from simpledet.engine.loss_scale import DynamicLossScaler

    return LossScaledStep(DynamicLossScaler.from_config(cfg.mixed_precision), max_norm)


def check_contexts(cfg, contexts):
    """Fails early, with a message, on contexts the config cannot train on.

    Raises:
        PrecisionError: fp16 on CPU contexts, or fp16 across machines (a loss-scale overflow
            skips the update on one machine only, which a dist kvstore cannot follow).
        ValueError: SyncBatchNorm built for a different number of devices than ``contexts``
            (its cross-device barrier would wait forever).
    """
    from simpledet.core.precision import PrecisionError, check_precision_contexts

    check_precision_contexts(cfg.precision, contexts)
    if cfg.precision == "fp16" and cfg.runtime.num_machines > 1:
        raise PrecisionError(f"precision=fp16 with num_machines={cfg.runtime.num_machines} is "
                             "not supported: machines would disagree on skipped loss-scale "
                             "steps; use precision=fp32 or bf16 across machines")
    backbone = cfg.get("backbone") if "backbone" in cfg.field_names() else None
    syncbn = backbone is not None and backbone.normalizer == "syncbn"
    if syncbn and len(contexts) != cfg.runtime.num_devices:
        raise ValueError(f"backbone.normalizer='syncbn' synchronizes {cfg.runtime.num_devices} "
                         f"devices (runtime.device_ids {cfg.runtime.device_ids}) but training "
                         f"runs on {len(contexts)} contexts {[str(c) for c in contexts]}; set "
                         "runtime.device_ids (or --gpus/--cpus) to match")


def build_trainer(cfg, detector, loader, contexts, *, experiment_dir=None, max_iter=None,
                  hooks=None, schedule=None, step=None, load_pretrained_weights=True,
                  kvstore=None):
    """A Trainer for a detector (simpledet.detectors.base.Detector) and its config.

    Args:
        cfg: frozen config (train, runtime, seed, pretrain, experiment_dir).
        detector: object with get_train_symbol(), train_data_names, fixed_param_patterns(),
            backbone_param_patterns() (needed with pretrained weights: which parameters the
            file must hold, see simpledet.engine.pretrained) and optionally initializer()
            (default: default_initializer()).
        loader: the training loader.
        contexts: mx contexts.
        experiment_dir: default cfg.experiment_dir.
        max_iter: stop early (default cfg.max_iter); the schedule is unchanged.
        hooks: default hooks.default_hooks(...).
        schedule: default LrSchedule.from_config(cfg).
        step: default ``default_step(cfg)`` (fp16: LossScaledStep, else SgdStep).
        load_pretrained_weights: read cfg.pretrain_path (when not None).
        kvstore: a kvstore object to use instead of creating cfg.runtime.kvstore (the one
            distributed.join created; a dist kvstore can be created only once per process).
    """
    from simpledet.engine.hooks import default_hooks
    from simpledet.engine.pretrained import load_pretrained
    from simpledet.engine.schedule import LrSchedule

    check_contexts(cfg, contexts)
    experiment_dir = experiment_dir or cfg.experiment_dir
    symbol = detector.get_train_symbol()
    data_names = list(detector.train_data_names)
    param_names = [n for n in symbol.list_arguments() if n not in data_names]
    fixed = match_fixed_params(param_names, detector.fixed_param_patterns())
    logger.info("%d of %d parameters fixed", len(fixed), len(param_names))
    initial_params = None
    if load_pretrained_weights and cfg.pretrain_path is not None:
        arg_params, aux_params, report = load_pretrained(
            cfg.pretrain_path, param_names, symbol.list_auxiliary_states(), cfg.pretrain,
            backbone_patterns=detector.backbone_param_patterns(), strict=cfg.pretrain_strict)
        (logger.warning if report.missing else logger.info)("%s", report.summary())
        initial_params = (arg_params, aux_params)
    schedule = schedule or LrSchedule.from_config(cfg)
    if hooks is None:
        hooks = default_hooks(experiment_dir, cfg.train.log_interval,
                              cfg.train.checkpoint_interval, tensorboard=cfg.train.tensorboard,
                              stop_when_dead=cfg.train.stop_when_dead)
    initializer = detector.initializer() if hasattr(detector, "initializer") else None
    return Trainer(symbol=symbol, data_names=data_names, contexts=contexts, loader=loader,
                   schedule=schedule, experiment_dir=experiment_dir, fixed_param_names=fixed,
                   kvstore=cfg.runtime.kvstore if kvstore is None else kvstore,
                   momentum=cfg.train.momentum,
                   weight_decay=cfg.train.weight_decay, clip_gradient=cfg.train.clip_gradient,
                   num_machines=cfg.runtime.num_machines, seed=cfg.seed,
                   max_iter=min(max_iter or cfg.max_iter, cfg.max_iter),
                   images_per_iteration=cfg.total_batch, initializer=initializer,
                   initial_params=initial_params,
                   initial_params_source=cfg.pretrain_path or "initial parameters",
                   initial_params_strict=cfg.pretrain_strict, hooks=hooks,
                   step=step or default_step(cfg))
