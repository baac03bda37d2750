"""Starts the processes of a distributed (ps-lite) run and supervises them (scripts/dist_launch.py).

A run is one scheduler, S servers and N workers, all running the same command; the environment
tells each its part (MXNet's ps-lite variables):

    DMLC_ROLE            scheduler | server | worker
    DMLC_PS_ROOT_URI     the scheduler's address, DMLC_PS_ROOT_PORT its port (a free one)
    DMLC_NUM_SERVER      S, DMLC_NUM_WORKER N
    DMLC_NODE_HOST       the address this node announces to the others
    DMLC_INTERFACE       the network interface ps-lite binds ('lo' for --local)

``plan_local`` puts every process on 127.0.0.1; ``plan_hosts`` runs the scheduler here and one
worker (and by default one server) per host over ssh. :func:`supervise` starts the plan, prefixes
each output line with the process's name, and stops everything (each process's whole process
group, loader workers included) when a worker fails, a server or the scheduler dies early, the
timeout passes, or the launcher gets SIGINT / SIGTERM / SIGHUP. ps-lite assigns worker ranks
itself (not in launch order): a worker announces its rank in its output (``RANK_LINE``) and
failures name it.
"""
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

# Written by simpledet.engine.distributed.join (RANK_ANNOUNCEMENT); a test keeps them in step.
RANK_LINE = re.compile(r"distributed worker: rank (\d+) of (\d+)")
TIMEOUT_EXIT_CODE = 124  # as timeout(1)
SSH_OPTIONS = ("-tt", "-o", "BatchMode=yes")  # -tt: the remote command dies with the connection


@dataclass
class Node:
    """One process of the run.

    Attributes:
        name: 'scheduler', 'server i' or 'worker i' (i: launch order, not the ps-lite rank).
        role: its DMLC_ROLE.
        host: where it runs: an address, or an ssh destination ('user@address').
        env: the DMLC_* variables it gets.
        argv: the command that starts it here: the user's command, or ssh running it remotely.
    """

    name: str
    role: str
    host: str
    env: dict
    argv: list = field(default_factory=list)


def free_port(host="127.0.0.1"):
    """A TCP port that is free on this machine right now (for the scheduler)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ps_env(role, node_host, root_uri, port, num_servers, num_workers, interface=None):
    """The ps-lite environment of one process."""
    env = {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(port),
           "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers),
           "DMLC_NODE_HOST": node_host}
    if interface:
        env["DMLC_INTERFACE"] = interface
    return env


def host_address(destination):
    """The address part of an ssh destination: 'user@10.0.0.2' -> '10.0.0.2'."""
    return destination.rsplit("@", 1)[-1]


def _nodes(placement, command, root_uri, port, num_servers, num_workers, interface, wrap):
    nodes = []
    for name, role, host in placement:
        env = ps_env(role, host_address(host), root_uri, port, num_servers, num_workers,
                     interface)
        nodes.append(Node(name, role, host, env, wrap(host, env, list(command))))
    return nodes


def plan_local(command, num_workers, port, num_servers=1):
    """Scheduler, servers and workers on this machine, talking over 127.0.0.1 (lo) only."""
    if num_workers < 1 or num_servers < 1:
        raise ValueError(f"need >= 1 worker and server, got {num_workers} and {num_servers}")
    host = "127.0.0.1"
    placement = ([("scheduler", "scheduler", host)]
                 + [(f"server {i}", "server", host) for i in range(num_servers)]
                 + [(f"worker {i}", "worker", host) for i in range(num_workers)])
    return _nodes(placement, command, host, port, num_servers, num_workers, "lo",
                  lambda _host, _env, argv: argv)


def read_hosts(path):
    """ssh destinations ('host' or 'user@host'), one per line; blanks and '#' comments skipped.

    Raises:
        ValueError: the file names no host.
    """
    with open(path) as f:
        hosts = [line.split("#", 1)[0].strip() for line in f]
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError(f"{path}: no host (one ssh destination per line)")
    return hosts


def ssh_argv(destination, env, command, cwd):
    """ssh running ``command`` on ``destination`` in folder ``cwd`` with ``env`` set.

    The remote side runs ``cd CWD && exec env K=V ... COMMAND`` (every word quoted), so the
    same path must exist there (a shared or mirrored checkout).
    """
    words = ["env"] + [f"{k}={v}" for k, v in sorted(env.items())] + list(command)
    remote = f"cd {shlex.quote(cwd)} && exec " + " ".join(shlex.quote(w) for w in words)
    return ["ssh", *SSH_OPTIONS, destination, remote]


def plan_hosts(command, hosts, root_uri, port, cwd, num_servers=None, interface=None):
    """The scheduler on this machine (``root_uri``: its address as the hosts reach it); one
    worker per host and ``num_servers`` servers (default one per host) spread over the hosts,
    started over ssh."""
    num_servers = len(hosts) if num_servers is None else num_servers
    if num_servers < 1:
        raise ValueError(f"need >= 1 server, got {num_servers}")
    placement = ([("scheduler", "scheduler", root_uri)]
                 + [(f"server {i}", "server", hosts[i % len(hosts)])
                    for i in range(num_servers)]
                 + [(f"worker {i}", "worker", host) for i, host in enumerate(hosts)])

    def wrap(host, env, argv):
        return argv if env["DMLC_ROLE"] == "scheduler" else ssh_argv(host, env, argv, cwd)

    return _nodes(placement, command, root_uri, port, num_servers, len(hosts), interface, wrap)


class _Stop(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _die_with_parent():
    # Linux: the child gets SIGTERM if the launcher itself is killed (even by SIGKILL).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _group_alive(pgid):
    """Whether a process group has a member that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    # Killed members stay zombies until their new parent (init) reaps them, which can take
    # seconds: they are no longer running, so only live members count.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid, signum):
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    """Runs a plan of Nodes until the workers finish, one fails, or time runs out.

    Args:
        nodes: the plan (scheduler and servers first).
        timeout: seconds for the whole run (None: no limit).
        grace: seconds the servers and scheduler get to exit after the workers finished, and
            a process group gets between SIGTERM and SIGKILL.
        out: where prefixed output lines go.
        err: where the launcher's own messages go.
    """

    def __init__(self, nodes, timeout=None, grace=10.0, out=None, err=None):
        self.nodes = list(nodes)
        self.timeout = timeout
        self.grace = float(grace)
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.procs = []
        self.ranks = {}  # node name -> ps-lite rank announced by the worker
        self._lock = threading.Lock()
        self._readers = []
        self._ps_exit_time = None  # when a server or the scheduler first exited normally

    # ---- output --------------------------------------------------------------------------
    def _write(self, text):
        with self._lock:
            self.out.write(text)
            self.out.flush()

    def _say(self, message):
        with self._lock:
            self.err.write(f"dist_launch: {message}\n")
            self.err.flush()

    def _forward(self, node, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if node.role == "worker" and node.name not in self.ranks:
                match = RANK_LINE.search(line)
                if match:
                    self.ranks[node.name] = int(match.group(1))
            self._write(f"[{node.name}] {line}\n")
        stream.close()

    def describe(self, index):
        node, proc = self.nodes[index], self.procs[index]
        rank = self.ranks.get(node.name)
        rank_text = f"rank {rank}, " if rank is not None else ""
        return f"{node.name} ({rank_text}{node.host}, pid {proc.pid})"

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self):
        """Starts every node (each in its own session, so its whole group can be stopped)."""
        for node in self.nodes:
            env = {**os.environ, **node.env, "PYTHONUNBUFFERED": "1"}
            self.procs.append(subprocess.Popen(
                node.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent))
        # Reader threads only after every fork: preexec_fn is unsafe once threads exist.
        for node, proc in zip(self.nodes, self.procs):
            reader = threading.Thread(target=self._forward, args=(node, proc.stdout),
                                      daemon=True)
            reader.start()
            self._readers.append(reader)

    def stop(self):
        """SIGTERM to every node's process group, SIGKILL to those left after ``grace``."""
        groups = [p.pid for p in self.procs]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            for proc in self.procs:
                proc.poll()  # reap exited leaders so their group can empty
            time.sleep(0.05)
        for pgid in groups:
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)

    def _check(self):
        """None while the run goes on; else the exit code it ends with."""
        workers = [i for i, n in enumerate(self.nodes) if n.role == "worker"]
        codes = [p.poll() for p in self.procs]
        for i in workers:
            if codes[i] not in (None, 0):
                self._readers[i].join(timeout=1.0)  # its last lines may announce its rank
                self._say(f"{self.describe(i)} exited with code {codes[i]}; stopping the "
                          "others")
                return codes[i] if codes[i] > 0 else 128 - codes[i]
        if all(codes[i] == 0 for i in workers):
            return 0
        # A server or the scheduler ends with the workers' final barrier, so it may exit (code
        # 0) just before the last workers do; the workers get `grace` seconds after that.
        for i, node in enumerate(self.nodes):
            if node.role == "worker" or codes[i] is None:
                continue
            if codes[i] != 0:
                self._say(f"{self.describe(i)} exited with code {codes[i]} before the "
                          "workers finished; stopping the others")
                return codes[i] if codes[i] > 0 else 128 - codes[i]
            self._ps_exit_time = self._ps_exit_time or time.monotonic()
            if time.monotonic() - self._ps_exit_time > self.grace:
                self._say(f"{self.describe(i)} exited, and workers were still running "
                          f"{self.grace:g} s later; stopping them")
                return 1
        return None

    def run(self):
        """Starts the plan and waits; always stops every process group before returning.

        Returns:
            0 when every worker succeeded; the failed worker's exit code (128 + signal when a
            signal killed it); 124 on timeout; 128 + signal number when interrupted.
        """
        def interrupt(signum, _frame):
            raise _Stop(signum)

        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, interrupt) for s in handled}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        code = None
        try:
            self.start()
            while code is None:
                code = self._check()
                if code is None and deadline is not None and time.monotonic() > deadline:
                    self._say(f"timed out after {self.timeout:g} s; stopping every process")
                    code = TIMEOUT_EXIT_CODE
                if code is None:
                    time.sleep(0.1)
            if code == 0:
                self._wait_for_ps_nodes()
        except _Stop as stop:
            self._say(f"got signal {stop.signum}; stopping every process")
            code = 128 + stop.signum
        finally:
            for s in handled:  # a second Ctrl-C must not interrupt the cleanup
                signal.signal(s, signal.SIG_IGN)
            try:
                self.stop()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
        return code

    def _wait_for_ps_nodes(self):
        # After the last worker's exit barrier, rank 0 tells the servers to stop; they and
        # the scheduler exit by themselves (stop() ends any that do not within grace).
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.05)
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                self._say(f"{self.describe(i)} still running {self.grace:g} s after the "
                          "workers finished; stopping it")


def supervise(nodes, timeout=None, grace=10.0, out=None, err=None):
    """Runs a plan (see Supervisor); returns the exit code."""
    return Supervisor(nodes, timeout=timeout, grace=grace, out=out, err=err).run()
