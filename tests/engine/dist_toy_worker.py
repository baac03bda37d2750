"""A process of a distributed run for tests/engine/test_distributed.py.

    python dist_toy_worker.py DATA_ROOT ITERATIONS

The real Trainer, kvstore and ParameterSyncHook on the stand-in detector, but every worker
initializes its parameters from its own seed (its pid), so only the sync from rank 0 can make
them agree. Prints one JSON line per worker: its rank, the record indices of its epoch-0
batches, and parameter digests before the sync and at the end.
"""
import json
import os
import sys

from standin_detector import StandInDetector, tiny_config

from simpledet.engine import distributed
from simpledet.engine.hooks import Hook


class FirstParams(Hook):
    """Digest of the parameters the worker initialized, before ParameterSyncHook runs."""

    digest = None

    def before_step(self, trainer, iteration):
        if self.digest is None:
            self.digest = distributed.params_digest(trainer.module.get_params()[0])


def main(root, iterations):
    distributed.serve_if_ps_node()
    import mxnet as mx

    from simpledet.engine.build import build_dataset, build_train_loader
    from simpledet.engine.trainer import build_trainer

    num_workers = distributed.launched_num_workers()
    cfg = tiny_config(root, **{"runtime.num_machines": num_workers,
                               "runtime.kvstore": "dist_sync", "train.images_per_device": 1})
    worker = distributed.join(cfg.runtime.kvstore)
    detector = StandInDetector(cfg)
    records = build_dataset(cfg, "train", for_training=True).records
    loader = build_train_loader(cfg, records, detector, rank=worker.rank,
                                num_parts=worker.num_workers)
    first = FirstParams()
    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=iterations,
                            hooks=[first, distributed.ParameterSyncHook(worker)],
                            kvstore=worker.kvstore)
    trainer.seed = os.getpid()  # a different initialization on every worker
    trainer.train()
    final = distributed.params_digest(trainer.module.get_params()[0])
    print(json.dumps({"rank": worker.rank, "plan": loader.plan(0), "initial": first.digest,
                      "final": final}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
