"""Training and inference speed and memory of a config, side by side with GluonCV.

    python scripts/benchmark.py --config config/faster_r50v1_fpn_1x.py --size 600x800 \
        --batch 1 [--precision fp32|bf16|fp16] [--iters N] [--peer gluoncv] [--json OUT] \
        [--plot OUT.png] [--profile OUT] [--threads T] [--gpus ID]

Reports, after warm-up, the median training step (img/s, s/iter), the peak memory (RSS on CPU,
GPU memory on a GPU), inference latency per image at batch 1 and throughput at --batch, and
the backbone+neck forward+backward alone (Mask R-CNN also the per-image mask post-processing);
each model runs in its own process with the same thread count. The peer follows the config's
family: GluonCV's Faster R-CNN or Mask R-CNN. See simpledet/benchmark/ and docs/benchmarks.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simpledet.benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
