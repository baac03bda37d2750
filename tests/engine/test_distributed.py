"""Distributed training: the launcher's plans and process supervision, the worker side's config
rules, and real ps-lite runs (scheduler + server + 2 workers on 127.0.0.1), each bounded by
--timeout and checked afterwards for leftover processes."""
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from standin_detector import write_tiny_coco

from simpledet.config import load_config
from simpledet.engine import checkpoint as ckpt
from simpledet.engine import distributed, launcher
from simpledet.engine.build import prepare_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAUNCH = os.path.join(REPO, "scripts", "dist_launch.py")
TRAIN = os.path.join(REPO, "detection_train.py")
SHAPES_FPN = os.path.join(REPO, "config", "shapes", "faster_fpn.py")
MARK = "SIMPLEDET_TEST_MARK"  # set for every process a test starts; leftovers are found by it
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}
# A tiny shapes run: 8 images at 128x160, 1 image per worker, 4 iterations, checkpoint at 2.
TINY_SHAPES = ["dataset.synthetic_train=8", "dataset.synthetic_val=2", "input.short=128",
               "input.long=160", "input.loader_workers=0", "train.images_per_device=1",
               "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()",
               "train.warmup_iters=1", "train.log_interval=1", "train.checkpoint_interval=2"]


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def marked_processes(mark):
    """Pids of live processes whose environment holds MARK=mark (zombies excluded)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state != "Z":
            found.append(int(pid))
    return found


def assert_nothing_left(mark):
    deadline = time.monotonic() + 3.0  # processes killed a moment ago may still be exiting
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_processes(mark) == []


def launch(args, cwd, mark, timeout=150):
    """Runs scripts/dist_launch.py ARGS; returns (returncode, stdout, stderr, seconds)."""
    env = {**os.environ, **ONE_THREAD, MARK: mark}
    env.pop("DMLC_ROLE", None)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, LAUNCH, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the launcher's own cleanup, then ours
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the launcher outlived its --timeout:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - start


# ---- the launcher's plans ----------------------------------------------------------------
def test_local_plan_puts_everything_on_loopback():
    command = ["python", "detection_train.py", "--config", "c.py"]
    nodes = launcher.plan_local(command, num_workers=2, port=9123)
    assert [(n.name, n.role) for n in nodes] == [
        ("scheduler", "scheduler"), ("server 0", "server"), ("worker 0", "worker"),
        ("worker 1", "worker")]
    for node in nodes:
        assert node.argv == command
        assert node.env == {"DMLC_ROLE": node.role, "DMLC_PS_ROOT_URI": "127.0.0.1",
                            "DMLC_PS_ROOT_PORT": "9123", "DMLC_NUM_SERVER": "1",
                            "DMLC_NUM_WORKER": "2", "DMLC_NODE_HOST": "127.0.0.1",
                            "DMLC_INTERFACE": "lo"}
    with pytest.raises(ValueError):
        launcher.plan_local(command, num_workers=0, port=9123)


def test_hosts_plan_runs_the_scheduler_here_and_the_rest_over_ssh():
    command = ["python", "detection_train.py", "--set", "name=a b", "x;rm -rf /"]
    nodes = launcher.plan_hosts(command, ["alice@10.0.0.2", "10.0.0.3"], "10.0.0.1", 9200,
                                "/shared/simpledet", interface="eth0")
    assert [(n.name, n.host) for n in nodes] == [
        ("scheduler", "10.0.0.1"), ("server 0", "alice@10.0.0.2"), ("server 1", "10.0.0.3"),
        ("worker 0", "alice@10.0.0.2"), ("worker 1", "10.0.0.3")]
    scheduler, worker = nodes[0], nodes[3]
    assert scheduler.argv == command and scheduler.env["DMLC_NODE_HOST"] == "10.0.0.1"
    assert worker.env["DMLC_NODE_HOST"] == "10.0.0.2"  # the address, not the ssh user
    assert worker.env["DMLC_NUM_SERVER"] == "2" and worker.env["DMLC_NUM_WORKER"] == "2"
    assert worker.env["DMLC_PS_ROOT_URI"] == "10.0.0.1" and worker.env["DMLC_INTERFACE"] == "eth0"
    assert worker.argv[:-2] == ["ssh", "-tt", "-o", "BatchMode=yes"]  # literal: a pinned argv
    assert worker.argv[-2] == "alice@10.0.0.2"
    # The remote shell sees each word once, quoted: spaces and ';' stay inside their word.
    words = shlex.split(worker.argv[-1])
    assert words[:5] == ["cd", "/shared/simpledet", "&&", "exec", "env"]
    assert words[5:5 + len(worker.env)] == [f"{k}={v}" for k, v in sorted(worker.env.items())]
    assert words[5 + len(worker.env):] == command
    one_server = launcher.plan_hosts(command, ["h1", "h2"], "h0", 1, "/w", num_servers=1)
    assert [n.role for n in one_server].count("server") == 1


def test_hosts_file(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# cluster\n10.0.0.2\n\n  bob@10.0.0.3  # second\n")
    assert launcher.read_hosts(hosts) == ["10.0.0.2", "bob@10.0.0.3"]
    hosts.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no host"):
        launcher.read_hosts(hosts)


def test_command_line_needs_a_command_and_a_placement():
    script = load_script(LAUNCH, "dist_launch_script")
    args = script.parse_args(["--local", "2", "--timeout", "60", "--", "python", "t.py", "-x"])
    assert args.command == ["python", "t.py", "-x"] and args.timeout == 60
    for bad in (["--local", "2"], ["--", "python"], ["--local", "0", "--", "python"],
                ["--local", "2", "--hosts", "h", "--", "python"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)


# ---- supervision, with stand-in processes (no ps-lite) -----------------------------------
def python_node(name, role, code, mark):
    return launcher.Node(name, role, "127.0.0.1", {MARK: mark}, [sys.executable, "-c", code])


HANG = "import time; time.sleep(600)"
# A process that hangs with a child of its own (like a loader worker) in its process group.
HANG_WITH_CHILD = ("import subprocess, sys, time; "
                   f"subprocess.Popen([sys.executable, '-c', {HANG!r}]); time.sleep(600)")


def supervise(nodes, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    code = launcher.supervise(nodes, out=out, err=err, **kwargs)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


def test_timeout_stops_hanging_processes_and_their_children():
    mark = uuid.uuid4().hex
    nodes = [python_node("scheduler", "scheduler", HANG, mark),
             python_node("worker 0", "worker", HANG_WITH_CHILD, mark)]
    code, _, err, seconds = supervise(nodes, timeout=1.5, grace=2.0)
    assert code == launcher.TIMEOUT_EXIT_CODE
    assert "timed out after 1.5 s" in err
    assert seconds < 8
    assert_nothing_left(mark)


def test_a_failed_worker_stops_the_others_and_is_named_by_rank():
    mark = uuid.uuid4().hex
    announce = distributed.RANK_ANNOUNCEMENT.format(rank=1, num_workers=2, kvstore="dist_sync")
    fail = f"import sys, time; print({announce!r}); time.sleep(0.3); sys.exit(3)"
    nodes = [python_node("scheduler", "scheduler", HANG, mark),
             python_node("server 0", "server", HANG, mark),
             python_node("worker 0", "worker", fail, mark),
             python_node("worker 1", "worker", HANG_WITH_CHILD, mark)]
    code, out, err, seconds = supervise(nodes, timeout=60, grace=2.0)
    assert code == 3
    assert re.search(r"worker 0 \(rank 1, 127\.0\.0\.1, pid \d+\) exited with code 3", err), err
    assert f"[worker 0] {announce}" in out
    assert seconds < 10
    assert_nothing_left(mark)


def test_success_waits_for_the_servers_and_stops_stragglers():
    mark = uuid.uuid4().hex
    done = "print('done')"
    nodes = [python_node("scheduler", "scheduler", "import time; time.sleep(0.3)", mark),
             python_node("server 0", "server", HANG, mark),  # never exits by itself
             python_node("worker 0", "worker", done, mark),
             python_node("worker 1", "worker", done, mark)]
    code, out, err, _ = supervise(nodes, timeout=60, grace=1.0)
    assert code == 0
    assert out.count("] done") == 2
    assert "server 0" in err and "still running" in err and "scheduler" not in err
    assert_nothing_left(mark)


def test_a_server_gone_while_workers_run_ends_the_run_after_the_grace():
    mark = uuid.uuid4().hex
    nodes = [python_node("scheduler", "scheduler", "pass", mark),
             python_node("worker 0", "worker", HANG, mark)]
    code, _, err, seconds = supervise(nodes, timeout=60, grace=0.5)
    assert code == 1
    assert "scheduler" in err and "workers were still running" in err
    assert seconds < 5
    assert_nothing_left(mark)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_launcher_stops_everything(tmp_path, signum):
    mark = uuid.uuid4().hex
    log = tmp_path / "out.txt"
    env = {**os.environ, MARK: mark}
    code = "import time; print('up', flush=True); time.sleep(600)"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, LAUNCH, "--local", "2", "--timeout", "60",
                                 "--", sys.executable, "-c", code], env=env, stdout=out,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while log.read_text().count("] up") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text().count("] up") == 4  # scheduler, server, two workers
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum
    assert f"got signal {int(signum)}" in err
    assert_nothing_left(mark)


# ---- the worker side's config rules ------------------------------------------------------
def runtime(num_machines=1, kvstore="local"):
    return SimpleNamespace(num_machines=num_machines, kvstore=kvstore)


@pytest.mark.parametrize("kvstore, expected", [
    ("local", "dist_sync"), ("device", "dist_device_sync"), ("nccl", "dist_device_sync"),
    ("dist_sync", "dist_sync"), ("dist_device_sync", "dist_device_sync")])
def test_a_launch_sets_the_machine_count_and_a_dist_kvstore(kvstore, expected):
    assert distributed.dist_overrides(runtime(1, kvstore), 3) == [
        "runtime.num_machines=3", f"runtime.kvstore={expected}"]
    assert distributed.dist_overrides(runtime(3, kvstore), 3)[0] == "runtime.num_machines=3"


def test_launch_and_config_disagreeing_is_an_error():
    with pytest.raises(distributed.DistributedConfigError, match="num_machines=4.*2 workers"):
        distributed.dist_overrides(runtime(4, "dist_sync"), 2)
    with pytest.raises(distributed.DistributedConfigError, match="horovod"):
        distributed.dist_overrides(runtime(1, "horovod"), 2)
    distributed.check_single_process(runtime(1, "device"))
    for bad in (runtime(2, "dist_sync"), runtime(1, "dist_device_sync")):
        with pytest.raises(distributed.DistributedConfigError, match="dist_launch.py"):
            distributed.check_single_process(bad)


def launched(precision="fp32", clip_grad_norm=None):
    return SimpleNamespace(precision=precision,
                           train=SimpleNamespace(clip_grad_norm=clip_grad_norm))


def test_fp16_loss_scaling_is_refused_under_a_launch():
    with pytest.raises(distributed.DistributedConfigError, match="fp16"):
        distributed.check_supported(launched("fp16"))
    for precision in ("fp32", "bf16"):
        distributed.check_supported(launched(precision))


def test_global_norm_clipping_is_refused_under_a_launch():
    # each worker would clip the summed update by its own gradient's norm
    with pytest.raises(distributed.DistributedConfigError, match="train.clip_grad_norm=10"):
        distributed.check_supported(launched(clip_grad_norm=10.0))


def test_launched_worker_detection():
    assert distributed.launched_num_workers({}) is None
    assert distributed.launched_num_workers({"DMLC_ROLE": "server"}) is None
    assert distributed.launched_num_workers({"DMLC_ROLE": "worker",
                                             "DMLC_NUM_WORKER": "2"}) == 2
    with pytest.raises(distributed.DistributedConfigError, match="DMLC_NUM_WORKER"):
        distributed.launched_num_workers({"DMLC_ROLE": "worker"})
    distributed.serve_if_ps_node({"DMLC_ROLE": "worker"})  # returns: workers train


def test_the_batch_lr_and_iterations_scale_with_the_workers():
    single = load_config(SHAPES_FPN)
    launched = load_config(SHAPES_FPN, distributed.dist_overrides(single.runtime, 2))
    assert launched.runtime.kvstore == "dist_sync"
    assert launched.total_batch == 2 * single.total_batch
    assert launched.lr == pytest.approx(2 * single.lr)
    assert launched.max_iter == single.max_iter // 2


def test_parameter_digest_is_bitwise_and_order_free():
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
    same = {"b": np.zeros(3, np.float32), "w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert distributed.params_digest(a) == distributed.params_digest(same)
    nudged = dict(a, w=np.nextafter(a["w"], np.float32(10)))  # one ulp
    assert distributed.params_digest(nudged) != distributed.params_digest(a)
    reshaped = dict(a, w=a["w"].reshape(3, 2))
    assert distributed.params_digest(reshaped) != distributed.params_digest(a)


def test_the_launcher_reads_the_rank_the_worker_announces():
    line = distributed.RANK_ANNOUNCEMENT.format(rank=3, num_workers=4, kvstore="dist_sync")
    assert launcher.RANK_LINE.search(line).groups() == ("3", "4")


def test_a_dist_config_without_a_launch_fails_fast(monkeypatch, capsys):
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    train = load_script(TRAIN, "detection_train_script")
    code = train.main(["--config", SHAPES_FPN, "--set", "runtime.num_machines=2",
                       "runtime.kvstore=dist_sync"])
    assert code == 2
    assert "scripts/dist_launch.py" in capsys.readouterr().err


# ---- real ps-lite runs on 127.0.0.1 ------------------------------------------------------
def test_local_two_workers_train_identical_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEDET_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(SHAPES_FPN, TINY_SHAPES)
    prepare_dataset(cfg)  # here, not in both workers at once
    experiments = tmp_path / "experiments"
    mark = uuid.uuid4().hex
    code, out, err, seconds = launch(
        ["--local", "2", "--timeout", "120", "--", sys.executable, TRAIN, "--config",
         SHAPES_FPN, "--max-iter", "4", "--set", *TINY_SHAPES, f"output_root={experiments}",
         "name=dist"], cwd=tmp_path, mark=mark)
    print(f"--local 2 tiny run: {seconds:.1f} s")
    assert code == 0, out[-4000:] + err
    assert seconds < 120
    assert_nothing_left(mark)

    # Both ranks ended with bitwise identical parameters, and rank 0 saved exactly those.
    digests = dict(re.findall(r"\[rank (\d)/2\] parameters after iteration 4: sha256 (\w+)",
                              out))
    assert set(digests) == {"0", "1"}, out[-4000:]
    assert digests["0"] == digests["1"]
    exp = experiments / "dist"
    saved = ckpt.load_checkpoint(ckpt.find_checkpoint(exp))
    assert saved.iteration == 4
    assert distributed.params_digest(saved.arg_params) == digests["0"]

    # Only rank 0 wrote the experiment folder; the config is the launched one.
    assert [it for it, _ in ckpt.list_checkpoints(exp)] == [2, 4]
    assert len(re.findall(r"\[rank 0/2\] checkpoint:", out)) == 2
    assert "[rank 1/2] checkpoint:" not in out
    train_log = (exp / "train.log").read_text()
    assert "[rank 0/2]" in train_log and "[rank 1/2]" not in train_log
    metrics = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    assert (exp / "loss_curve.png").is_file()
    saved_cfg = load_config(str(exp / "config.json"))
    assert (saved_cfg.runtime.num_machines, saved_cfg.runtime.kvstore) == (2, "dist_sync")
    assert saved_cfg.total_batch == 2
    assert saved.state["loader"]["num_parts"] == 2  # the data was sharded over the workers
    assert "lr 0.01" in out  # 0.08 per 16 images at a total batch of 2


def test_workers_start_from_rank_zero_and_see_disjoint_shards(tmp_path):
    sizes = [(40, 56), (56, 40), (30, 44), (44, 60), (50, 50), (40, 60), (56, 40), (20, 30)]
    write_tiny_coco(str(tmp_path), "train", sizes)
    mark = uuid.uuid4().hex
    code, out, err, _ = launch(["--local", "2", "--timeout", "90", "--", sys.executable,
                                os.path.join(HERE, "dist_toy_worker.py"), str(tmp_path), "3"],
                               cwd=HERE, mark=mark)
    assert code == 0, out[-4000:] + err
    assert_nothing_left(mark)
    reports = [json.loads(line.split("] ", 1)[1]) for line in out.splitlines()
               if line.split("] ", 1)[-1].startswith('{"rank"')]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    first, second = reports
    assert first["initial"] != second["initial"]  # each worker initialized differently ...
    assert first["final"] == second["final"]  # ... and the sync from rank 0 made them agree
    seen = [i for r in reports for batch in r["plan"] for i in batch]
    assert sorted(seen) == list(range(len(sizes)))  # every image once, on one worker


def test_a_config_that_disagrees_with_the_launch_stops_the_run(tmp_path):
    mark = uuid.uuid4().hex
    code, out, err, seconds = launch(
        ["--local", "2", "--timeout", "60", "--", sys.executable, TRAIN, "--config",
         SHAPES_FPN, "--set", "runtime.num_machines=3", "runtime.kvstore=dist_sync"],
        cwd=tmp_path, mark=mark)
    assert code == 2
    assert "runtime.num_machines=3, but the launch started 2 workers" in out
    assert re.search(r"worker \d \(127\.0\.0\.1, pid \d+\) exited with code 2", err), err
    assert seconds < 60
    assert_nothing_left(mark)
    assert not (tmp_path / "experiments").exists()
