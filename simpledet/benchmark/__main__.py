"""``python -m simpledet.benchmark``: the same as scripts/benchmark.py (workers run this)."""
import sys

from simpledet.benchmark.cli import main

sys.exit(main())
