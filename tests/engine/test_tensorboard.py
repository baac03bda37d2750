"""TensorBoard event files: what the sink writes reads back as the same scalars."""
import glob
import os
import struct
import sys

import pytest

from simpledet.engine.hooks import LoggingHook, default_hooks
from simpledet.engine.tensorboard import TENSORBOARD_DIR, TensorBoardSink, open_tensorboard


def read_scalars(logdir):
    """{tag: [(step, value)]} of every event file under logdir (TFRecord framing: length u64,
    its crc u32, the Event protobuf, its crc u32)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def record(iteration, rpn, bbox, lr, **extra):
    return {"iteration": iteration, "lr": lr, "losses": {"rpn_cls_loss": rpn,
                                                         "bbox_cls_loss": bbox},
            "loss": rpn + bbox, "img_per_s": 3.5, "time": 0.0, **extra}


def test_sink_scalars_read_back(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    sink.write(record(20, 0.5, 1.25, 0.01))
    sink.write(record(40, 0.25, 1.0, 0.02, loss_scale=1024.0, skipped_steps=2))
    sink.close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["loss/rpn_cls_loss"] == [(20, 0.5), (40, 0.25)]
    assert scalars["loss/bbox_cls_loss"] == [(20, 1.25), (40, 1.0)]
    assert scalars["loss/total"] == [(20, 1.75), (40, 1.25)]
    assert scalars["lr"] == [(20, pytest.approx(0.01)), (40, pytest.approx(0.02))]
    assert scalars["speed/img_per_s"] == [(20, 3.5), (40, 3.5)]
    assert scalars["fp16/loss_scale"] == [(40, 1024.0)]
    assert scalars["fp16/skipped_steps"] == [(40, 2.0)]


def test_default_hooks_switch(tmp_path):
    off = default_hooks(str(tmp_path / "off"), 5, 10, tensorboard=False)
    assert isinstance(off[1], LoggingHook) and off[1].sinks == []
    on = default_hooks(str(tmp_path / "on"), 5, 10, tensorboard=True)
    assert isinstance(on[1].sinks[0], TensorBoardSink)
    assert on[1].sinks[0].logdir == os.path.join(str(tmp_path / "on"), TENSORBOARD_DIR)
    on[1].sinks[0].close()
    # workers other than rank 0 write no files at all
    assert default_hooks(str(tmp_path / "w"), 5, 10, write_files=False,
                         tensorboard=True)[1].sinks == []


def test_missing_tensorboardx_warns_and_trains_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
    with caplog.at_level("WARNING", logger="simpledet.train"):
        assert open_tensorboard(tmp_path / "tb") is None
    assert any("tensorboardX is not installed" in r.getMessage() for r in caplog.records)
