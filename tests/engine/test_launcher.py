"""The launcher's signal handling (simpledet/engine/launcher.py, scripts/dist_launch.py), with
stand-in processes (no ps-lite): SIGHUP stops every child, a child that ignores SIGTERM gets
SIGKILL after the grace period, children die with a launcher killed by SIGKILL
(PR_SET_PDEATHSIG); and the exact ssh command line of a remote node."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from test_distributed import MARK, marked_processes  # a mark in each test's processes

from simpledet.engine import launcher

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAUNCH = os.path.join(REPO, "scripts", "dist_launch.py")


def wait_until_gone(mark, seconds=5.0):
    deadline = time.monotonic() + seconds
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    return marked_processes(mark)


@pytest.fixture
def mark():
    """A fresh mark; processes that carry it are SIGKILLed (by pid) after the test."""
    value = uuid.uuid4().hex
    yield value
    for pid in marked_processes(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_launcher(tmp_path, mark, code):
    """scripts/dist_launch.py --local 1 running ``python -c code`` in its 3 processes
    (scheduler, server, worker); returns once all three printed 'up'."""
    log = tmp_path / "out.txt"
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, LAUNCH, "--local", "1", "--timeout", "120", "--",
                             sys.executable, "-c", code], env={**os.environ, MARK: mark},
                            stdout=out, stderr=subprocess.PIPE, text=True)
    out.close()
    deadline = time.monotonic() + 30
    while log.read_text().count("] up") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().count("] up") == 3, log.read_text()
    assert len(marked_processes(mark)) == 4  # the launcher and its three children
    return proc


HANG = "import time; print('up', flush=True); time.sleep(600)"


def test_sighup_to_the_launcher_stops_its_children(tmp_path, mark):
    proc = start_launcher(tmp_path, mark, HANG)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGHUP, (proc.returncode, err)
    assert "got signal 1; stopping every process" in err
    assert wait_until_gone(mark) == []


def test_children_die_when_the_launcher_is_killed(tmp_path, mark):
    """SIGKILL gives the launcher no chance to clean up: the kernel's parent-death signal
    (prctl PR_SET_PDEATHSIG, set in each child) must end them."""
    proc = start_launcher(tmp_path, mark, HANG)
    children = [p for p in marked_processes(mark) if p != proc.pid]
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = wait_until_gone(mark)
    assert left == [], f"children {children} outlived the launcher: {left} still running"


# Runs a Supervisor in its own process (it installs signal handlers, and a broken escalation
# would hang): worker 0 ignores SIGTERM, the scheduler does not; worker 1 fails once worker 0
# is ready, which makes the supervisor stop the others. Prints the outcome as json.
DRIVER = r"""
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("launcher_under_test", sys.argv[1])
launcher = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = launcher
spec.loader.exec_module(launcher)
ready, grace = sys.argv[2], float(sys.argv[3])
stubborn = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({ready!r}, 'w').close(); time.sleep(600)")
fail = (f"import os, sys, time\nwhile not os.path.exists({ready!r}): time.sleep(0.02)\n"
        "sys.exit(3)")
py, hang = sys.executable, "import time; time.sleep(600)"
nodes = [launcher.Node("scheduler", "scheduler", "127.0.0.1", {}, [py, "-c", hang]),
         launcher.Node("worker 0", "worker", "127.0.0.1", {}, [py, "-c", stubborn]),
         launcher.Node("worker 1", "worker", "127.0.0.1", {}, [py, "-c", fail])]
supervisor = launcher.Supervisor(nodes, timeout=60, grace=grace, out=sys.stderr, err=sys.stderr)
start = time.monotonic()
code = supervisor.run()
print(json.dumps({"code": code, "seconds": time.monotonic() - start,
                  "returncodes": [p.returncode for p in supervisor.procs]}))
"""


def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace(tmp_path, mark):
    grace = 1.0
    proc = subprocess.run([sys.executable, "-c", DRIVER,
                           os.path.join(REPO, "simpledet", "engine", "launcher.py"),
                           str(tmp_path / "ready"), str(grace)],
                          env={**os.environ, MARK: mark}, capture_output=True, text=True,
                          timeout=20, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 3
    scheduler, stubborn, failed = result["returncodes"]
    assert failed == 3
    assert scheduler == -signal.SIGTERM  # stopped politely
    assert stubborn == -signal.SIGKILL  # ignored SIGTERM: killed once the grace was over
    assert result["seconds"] >= grace  # it was given the grace first
    assert wait_until_gone(mark) == []  # its child (same process group) too


def test_ssh_argv_is_exactly_this_command_line():
    argv = launcher.ssh_argv("alice@10.0.0.2", {"DMLC_ROLE": "worker", "A": "x y"},
                             ["python", "train.py", "--set", "name=a b"], "/shared/my repo")
    assert argv == [
        "ssh", "-tt", "-o", "BatchMode=yes", "alice@10.0.0.2",
        "cd '/shared/my repo' && exec env 'A=x y' DMLC_ROLE=worker python train.py --set "
        "'name=a b'"]
