"""Speed and memory benchmark of a config, side by side with GluonCV's closest model.

Modules, by job: ``cli`` (options, one worker process per measurement, the report),
``settings`` (options -> what runs, the config), ``worker`` (one measurement in its process),
``synthetic`` (the fixed input batch), ``ours`` (our training step, inference, backbone+neck),
``gluoncv_peer`` (the GluonCV model of the config's family, Faster or Mask R-CNN, trained and
run as its scripts do), ``measure`` (timing and
peak memory), ``report`` (table, JSON, chart). Entry points: scripts/benchmark.py and
``python -m simpledet.benchmark``; docs/benchmarks.md has the commands and results.
"""
