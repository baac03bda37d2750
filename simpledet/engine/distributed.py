"""The worker side of a distributed (ps-lite ``dist_sync``) run started by scripts/dist_launch.py.

The launcher starts every process with the same command and tells it its part through the
environment (``DMLC_ROLE`` = scheduler / server / worker, ``DMLC_NUM_WORKER``, ...). In
detection_train.py:

1. :func:`serve_if_ps_node` first: a scheduler or server hands the process to ps-lite (MXNet
   runs it when imported) and exits when the workers are done.
2. A worker's config gets the launch's machine count and a dist kvstore
   (:func:`dist_overrides`) before it is frozen, so ``cfg.total_batch`` (and the lr and
   iteration counts derived from it) count every worker; a config that asks for another
   machine count is an error. A config that asks for a dist kvstore or several machines
   without a launch is an error too (:func:`check_single_process`), as is fp16 loss scaling
   under a launch (:func:`check_supported`).
3. :func:`join` creates the kvstore once; its rank and worker count shard the data and decide
   who writes the experiment folder (rank 0 only).

Updates run on the workers, not on the servers (``MXNET_UPDATE_ON_KVSTORE=0``): the servers
only sum the gradients each worker pushes, every worker pulls the same sum and applies the same
local optimizer to it. The optimizer is therefore the single-machine one (lr schedule by update
count, ``multi_precision``, gradient clipping after ``rescale_grad``, weight decay), and its
state (momentum) lives on the workers, so rank 0 can save it in checkpoints; server-side
updates would keep it on the servers, where MXNet cannot save it. Workers start from rank 0's
parameters (:class:`ParameterSyncHook`) and stay bitwise identical, because they apply
identical updates to identical values. BatchNorm moving statistics (aux states) are not
gradients: each worker keeps its own, from its own shard, and rank 0 saves its own.
"""
import ctypes
import hashlib
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

from simpledet.engine.hooks import Hook

logger = logging.getLogger("simpledet.train")

PS_ROLES = ("scheduler", "server")
# The kvstore a single-machine setting becomes across machines: 'dist_sync' sums on the CPU
# like 'local', 'dist_device_sync' sums a worker's devices on a device like 'device'/'nccl'.
DIST_KVSTORE_OF = {"local": "dist_sync", "device": "dist_device_sync",
                   "nccl": "dist_device_sync"}
# Printed once by every worker; the launcher reads it to name a failed worker by its rank.
RANK_ANNOUNCEMENT = "distributed worker: rank {rank} of {num_workers} (kvstore {kvstore})"
LAUNCH_HELP = ("python scripts/dist_launch.py --local N -- python detection_train.py ... "
               "(or --hosts FILE); see docs/distributed.md")


class DistributedConfigError(ValueError):
    """The config and the launch disagree (one line, fixable from the command line)."""


def node_role(env=None):
    """'scheduler', 'server' or 'worker' in a launched process, else None."""
    env = os.environ if env is None else env
    return env.get("DMLC_ROLE") or None


def serve_if_ps_node(env=None):
    """In a launched scheduler or server: runs ps-lite until the workers finish, then exits.

    MXNet runs the ps-lite node as soon as it is imported with DMLC_ROLE=scheduler/server
    (importing the simpledet package already does that) and calls sys.exit() when the node
    stops; this function makes the hand-off explicit and exits in case it did not. In a worker
    or a plain run it returns at once.
    """
    if node_role(env) in PS_ROLES:
        import mxnet  # noqa: F401 (the import runs the scheduler / server)

        sys.exit(0)


def launched_num_workers(env=None):
    """DMLC_NUM_WORKER in a launched worker process; None in a plain run.

    Raises:
        DistributedConfigError: a worker without a valid DMLC_NUM_WORKER.
    """
    env = os.environ if env is None else env
    if node_role(env) != "worker":
        return None
    try:
        num_workers = int(env.get("DMLC_NUM_WORKER", ""))
    except ValueError:
        num_workers = 0
    if num_workers < 1:
        raise DistributedConfigError(
            f"DMLC_ROLE=worker but DMLC_NUM_WORKER={env.get('DMLC_NUM_WORKER')!r}; start "
            f"workers with {LAUNCH_HELP}")
    return num_workers


def dist_overrides(runtime, num_workers):
    """The ``--set`` overrides that make a config describe a launch of ``num_workers`` workers.

    ``runtime.num_machines`` becomes the worker count: a config may leave it at 1 (the launch
    decides) or give the same count; another count is an error. A single-machine kvstore is
    replaced by its dist counterpart (DIST_KVSTORE_OF); a dist one is kept.

    Args:
        runtime: the config's RuntimeConfig.
        num_workers: workers of the launch (DMLC_NUM_WORKER).

    Returns:
        list of "key=value" strings.

    Raises:
        DistributedConfigError: another machine count, or kvstore 'horovod'.
    """
    if runtime.num_machines not in (1, num_workers):
        raise DistributedConfigError(
            f"the config sets runtime.num_machines={runtime.num_machines}, but the launch "
            f"started {num_workers} workers; launch {runtime.num_machines} workers, or leave "
            "runtime.num_machines at 1 (the launch sets it)")
    kvstore = runtime.kvstore
    if kvstore == "horovod":
        raise DistributedConfigError("runtime.kvstore='horovod' cannot run under the ps-lite "
                                     "launcher; use dist_sync or dist_device_sync")
    if not kvstore.startswith("dist"):
        kvstore = DIST_KVSTORE_OF[kvstore]
    return [f"runtime.num_machines={num_workers}", f"runtime.kvstore={kvstore}"]


def check_single_process(runtime):
    """Raises DistributedConfigError when a config meant for a launch runs without one."""
    if runtime.num_machines > 1 or runtime.kvstore.startswith("dist"):
        raise DistributedConfigError(
            f"runtime.num_machines={runtime.num_machines} with kvstore "
            f"{runtime.kvstore!r} needs the distributed launcher: {LAUNCH_HELP}")


def check_supported(cfg):
    """Raises DistributedConfigError for settings a distributed run cannot train with yet."""
    if cfg.precision == "fp16":
        # Each worker would check its own gradients for overflow: one skipping an update that
        # another applies leaves the other waiting for its gradients forever.
        raise DistributedConfigError(
            "precision 'fp16' (dynamic loss scaling) is not supported in a distributed run "
            "yet: workers decide on their own gradients whether to skip an update; use fp32 "
            "or bf16")
    if cfg.train.clip_grad_norm is not None:
        # Each worker would scale the summed update by its own gradient's norm.
        raise DistributedConfigError(
            f"train.clip_grad_norm={cfg.train.clip_grad_norm} is not supported in a distributed "
            "run yet: each worker would clip by the norm of its own gradient, and their "
            "updates would differ; set train.clip_grad_norm=None (the launch keeps every other "
            "setting)")


@dataclass
class DistWorker:
    """This process's place in a distributed run.

    Attributes:
        kvstore: the mx KVStore (pass it to the trainer; create it only once per process).
        rank: 0..num_workers-1; rank 0 writes the experiment folder.
        num_workers: workers in the run.
    """

    kvstore: object
    rank: int
    num_workers: int

    @property
    def tag(self):
        """'rank r/n', for log lines."""
        return f"rank {self.rank}/{self.num_workers}"

    def abandon(self):
        """Lets this process exit without waiting for the others.

        By default a worker's kvstore waits at exit until every worker has finished (and rank 0
        then stops the servers); a worker that failed would wait forever for peers that wait
        for its gradients. The launcher stops the others when a worker fails.
        """
        from mxnet.base import _LIB, check_call

        check_call(_LIB.MXKVStoreSetBarrierBeforeExit(self.kvstore.handle, ctypes.c_int(0)))


def join(kvstore_type, env=None):
    """Creates the dist kvstore (blocks until every launched node has started).

    Args:
        kvstore_type: 'dist_sync' or 'dist_device_sync' (cfg.runtime.kvstore).
        env: the environment (default os.environ).

    Returns:
        DistWorker.

    Raises:
        DistributedConfigError: not a launched worker, or a non-dist kvstore type.
    """
    num_workers = launched_num_workers(env)
    if num_workers is None:
        raise DistributedConfigError(f"not a launched worker (DMLC_ROLE is not 'worker'); "
                                     f"start it with {LAUNCH_HELP}")
    if not str(kvstore_type).startswith("dist"):
        raise DistributedConfigError(f"kvstore {kvstore_type!r} is not a dist kvstore")
    # Read by Module.init_optimizer: sum on the servers, update on the workers (module doc).
    os.environ["MXNET_UPDATE_ON_KVSTORE"] = "0"
    import mxnet as mx

    kvstore = mx.kv.create(kvstore_type)
    worker = DistWorker(kvstore, int(kvstore.rank), int(kvstore.num_workers))
    if worker.num_workers != num_workers:
        worker.abandon()
        raise DistributedConfigError(f"the kvstore has {worker.num_workers} workers, the "
                                     f"launch announced DMLC_NUM_WORKER={num_workers}")
    print(RANK_ANNOUNCEMENT.format(rank=worker.rank, num_workers=worker.num_workers,
                                   kvstore=kvstore_type), flush=True)
    return worker


def params_digest(params):
    """sha256 over the names, dtypes, shapes and bytes of a name -> array dict (NDArray or
    numpy), in name order: equal digests mean bitwise equal parameters."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = params[name]
        array = np.ascontiguousarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


DIGEST_LINE = "parameters after iteration {iteration}: sha256 {digest} ({count} arrays)"


class ParameterSyncHook(Hook):
    """Starts every worker from rank 0's parameters; logs a digest of them at the end.

    Before the first step (the graph is bound and the kvstore initialized by then: MXNet's
    Module pushes rank 0's values to every key), each worker pulls every parameter and loads
    it, so workers agree even when their initializations would not (another device, another
    pretrained file). At the end each worker logs :data:`DIGEST_LINE`; equal digests on all
    ranks show the run stayed in sync (BatchNorm statistics are per worker and not included).
    """

    def __init__(self, worker):
        self.worker = worker
        self._synced = False

    def before_step(self, trainer, iteration):
        if self._synced:
            return
        import mxnet as mx

        arg_params, aux_params = trainer.module.get_params()
        for name in sorted(arg_params):
            self.worker.kvstore.pull(name, out=arg_params[name])
        # The pulls must land before the first push: both use the same keys on the servers.
        mx.nd.waitall()
        trainer.module.set_params(arg_params, aux_params)
        self._synced = True
        logger.info("parameters synchronized from rank 0 (%d arrays)", len(arg_params))

    def after_train(self, trainer):
        arg_params, _ = trainer.module.get_params()
        logger.info(DIGEST_LINE.format(iteration=trainer.iteration,
                                       digest=params_digest(arg_params),
                                       count=len(arg_params)))
