"""Two launched workers train like one machine, and a launched run resumes exactly.

``dist_launch --local 2`` with 1 image per worker is compared with one process on 2 CPU
contexts x 1 image (the same seed, the same total batch of 2, hence the same lr and schedule)
on the real shapes FPN layout at 64x80, after K updates. The two set-ups compute the same
thing only where nothing differs by construction, so the graph is chosen for it:

- GroupNorm (``backbone.normalizer=gn``): no batch statistics, no moving averages (aux states)
  that MXNet's Module would average over contexts but a worker keeps to itself;
- no sampling randomness: MXNet's CPU contexts in one process share ONE random generator
  (cpu(1) continues cpu(0)'s stream) while each worker has its own, so ProposalTarget's random
  RoI sampling cannot agree. Here it draws nothing: no proposal counts as background
  (``bg_iou_hi = bg_iou_lo``) and every foreground fits (``fg_fraction=1``, ``batch_per_image``
  >= proposals + gt). The loader's anchor sampling draws nothing either (a batch larger than
  the anchors, ``fg_fraction=1``) and flipping is off: the loader seeds each batch by its
  global index, which is not the same for a batch of 2 and two batches of 1;
- no global-norm clipping (``train.clip_grad_norm=None``): a worker clips by the norm of its
  own gradient (steps.GradientRescale), one process by the norm of both contexts'.

Tolerance: after K=4 updates every parameter must agree within ATOL + RTOL * |value| (1e-7,
1e-6). Measured here the two are bitwise equal (the workers and the process differ only in
where the two contexts' gradients are added, a + b either way); the tolerance leaves room for a
CPU or thread count that orders a reduction differently. Dropping ``num_machines`` from
``rescale_grad`` (twice the step in the workers) is far outside it, and every parameter that
gets a gradient must have moved from its initial value by more than 10x the tolerance.

The resume test runs the quickstart graph as it is (random sampling, BatchNorm): a ``--local 2``
run resumed from 2 to 4 iterations must end with the digest of a straight run of 4.
"""
import re
import sys
import uuid

import mxnet as mx
import numpy as np
import pytest
from standin_detector import write_tiny_coco
from test_distributed import SHAPES_FPN, TRAIN, assert_nothing_left, launch

from simpledet.config import load_config
from simpledet.engine import checkpoint as ckpt
from simpledet.engine import distributed
from simpledet.engine.build import build_dataset, build_detector, build_train_loader
from simpledet.engine.hooks import CheckpointHook, Hook
from simpledet.engine.trainer import build_trainer

# 8 landscape images (one bucket: a batch of 2 is exactly two batches of 1), scales != 1
SIZES = [(48, 60), (96, 120), (64, 80), (40, 50), (80, 100), (72, 90), (56, 70), (64, 80)]
K = 4  # updates compared; the launched runs checkpoint at 2 and 4
ATOL, RTOL = 1e-7, 1e-6
# proposals (32) + gt rows (8) <= RoIs per image (40): the RoI sampler never draws
DETERMINISTIC_GRAPH = [
    "backbone.normalizer=gn", "input.flip=False", "input.max_num_gt=8",
    "rpn.batch_per_image=4096", "rpn.fg_fraction=1.0", "rpn.train_pre_nms=128",
    "rpn.train_post_nms=32", "roi_sampler.batch_per_image=40", "roi_sampler.fg_fraction=1.0",
    "roi_sampler.bg_iou_hi=0.0", "roi_sampler.bg_iou_lo=0.0", "train.clip_grad_norm=None"]
# At 64x80 the P3-P5 output convs get no gradient: the anchors of those levels (64 px and
# more) do not fit in the image and every RoI pools from P2. Weight decay alone moves them.
NO_GRADIENT = re.compile(r"^fpn_p[345]_conv_")


def overrides(root, output_root, name, graph=DETERMINISTIC_GRAPH):
    return ["dataset.synthetic=none", f"dataset.root={root}", "dataset.train_split=train",
            "dataset.val_split=train", "dataset.class_names=('a', 'b')", "input.short=64",
            "input.long=80", "input.loader_workers=0", "train.images_per_device=1",
            "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()", "train.warmup_iters=1",
            "train.log_interval=1", "train.checkpoint_interval=2", "train.tensorboard=False",
            *graph, f"output_root={output_root}", f"name={name}"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_coco(str(root), "train", SIZES)
    # the records cache is written here, not by two workers at once
    build_dataset(load_config(SHAPES_FPN, overrides(root, root, "x")), "train", True)
    return root


def launch_train(root, output_root, *args, graph=DETERMINISTIC_GRAPH):
    """``dist_launch --local 2`` of detection_train.py on the tiny set-up; returns the digest
    of the workers' final 'parameters after iteration ...' lines (equal on both ranks)."""
    mark = uuid.uuid4().hex
    output_root.mkdir(exist_ok=True)
    code, out, err, _ = launch(
        ["--local", "2", "--timeout", "120", "--", sys.executable, TRAIN, "--config",
         SHAPES_FPN, *args, "--set", *overrides(root, output_root, "dist", graph)],
        cwd=output_root, mark=mark)
    assert code == 0, out[-4000:] + err[-2000:]
    assert_nothing_left(mark)
    digests = dict(re.findall(r"\[rank (\d)/2\] parameters after iteration \d+: sha256 (\w+)",
                              out))
    assert set(digests) == {"0", "1"}, out[-4000:]
    assert digests["0"] == digests["1"], "the workers ended with different parameters"
    return digests["0"]


@pytest.fixture
def launched(data_root, tmp_path_factory):
    """A --local 2 run of K iterations: rank 0's checkpoint after K."""
    output_root = tmp_path_factory.mktemp("launched")
    digest = launch_train(data_root, output_root, "--max-iter", str(K))
    saved = ckpt.load_checkpoint(ckpt.find_checkpoint(str(output_root / "dist"), K))
    assert saved.iteration == K
    assert distributed.params_digest(saved.arg_params) == digest
    return saved


class InitialParams(Hook):
    """The parameters the first update starts from."""

    def before_step(self, trainer, iteration):
        if iteration == trainer.start_iteration:
            arg_params, _ = trainer.module.get_params()
            self.arg_params = {k: v.asnumpy() for k, v in arg_params.items()}


def test_two_workers_train_like_one_process_with_two_contexts(data_root, launched, tmp_path):
    cfg = load_config(SHAPES_FPN, [*overrides(data_root, tmp_path, "single"),
                                   "runtime.device_ids=(0, 1)"])
    assert (cfg.total_batch, cfg.runtime.num_machines, cfg.runtime.num_devices) == (2, 1, 2)
    detector = build_detector(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    initial = InitialParams()
    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0), mx.cpu(1)], max_iter=K,
                            hooks=[initial, CheckpointHook(K)])
    trainer.train()
    single_args, single_aux = trainer.module.get_params()
    assert not single_aux, "GroupNorm: no moving statistics to differ"

    saved = launched
    assert sorted(saved.arg_params) == sorted(single_args)
    worst = max(((np.abs(saved.arg_params[n].asnumpy() - v.asnumpy())
                  / (ATOL + RTOL * np.abs(v.asnumpy()))).max(), n)
                for n, v in single_args.items())
    assert worst[0] <= 1.0, (
        f"after {K} updates the launched workers differ from one process with 2 contexts: "
        f"{worst[1]} is {worst[0]:.3g}x the tolerance (atol {ATOL}, rtol {RTOL})")
    # ... and the comparison is not vacuous: the updates moved the parameters well beyond it
    trained = [n for n in single_args
               if n not in trainer.fixed_param_names and not NO_GRADIENT.match(n)]
    assert len(trained) > 80
    still = [n for n in trained
             if (np.abs(single_args[n].asnumpy() - initial.arg_params[n])
                 <= 10 * (ATOL + RTOL * np.abs(initial.arg_params[n]))).all()]
    assert not still, f"parameters that did not move in {K} updates: {still}"


def test_launched_run_resumes_to_the_straight_digest(data_root, tmp_path):
    """docs/distributed.md's claim, on the quickstart graph as it is (random RoI and anchor
    sampling, flips, BatchNorm) but for the global-norm clipping, which would desynchronize
    the workers (each clips by its own gradient's norm)."""
    graph = ["train.clip_grad_norm=None"]
    straight = launch_train(data_root, tmp_path / "straight", "--max-iter", str(K), graph=graph)
    split = tmp_path / "split"
    half = launch_train(data_root, split, "--max-iter", str(K // 2), graph=graph)
    assert half != straight
    assert [it for it, _ in ckpt.list_checkpoints(str(split / "dist"))] == [K // 2]
    resumed = launch_train(data_root, split, "--max-iter", str(K), "--resume", graph=graph)
    assert resumed == straight, f"a --local 2 run resumed from {K // 2} to {K} ends elsewhere"
    assert [it for it, _ in ckpt.list_checkpoints(str(split / "dist"))] == [K // 2, K]
