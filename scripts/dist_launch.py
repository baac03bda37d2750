"""Launches a distributed (ps-lite dist_sync) training: scheduler, servers and workers.

    python scripts/dist_launch.py --local 2 [--timeout 3600] -- \\
        python detection_train.py --config config/shapes/faster_fpn.py
    python scripts/dist_launch.py --hosts hosts.txt [--servers S] [--root-uri ADDR] \\
        [--interface eth0] -- python detection_train.py --config ...

--local N runs N workers, one server and the scheduler on this machine over 127.0.0.1 only.
--hosts FILE (one ssh destination per line) runs one worker and one server per host over ssh
(same working directory there) and the scheduler here. Every process runs the command after
'--'; the environment tells each its role (docs/distributed.md). Output lines are prefixed
with the process name. When a worker fails, a server dies, --timeout passes or the launcher
gets Ctrl-C / SIGTERM, every process group is stopped; the exit code is the failed worker's
(124 on timeout, 128 + N on signal N).
"""
import argparse
import importlib.util
import os
import socket
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_launcher():
    """simpledet/engine/launcher.py, loaded by path: it needs only the standard library, and
    importing it through the simpledet package would load MXNet and the operator library
    (~3 s of CPU, and their memory for the whole run) into a process that only supervises."""
    path = os.path.join(REPO, "simpledet", "engine", "launcher.py")
    spec = importlib.util.spec_from_file_location("simpledet_launcher", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s (--local N | --hosts FILE) [options] -- command ...")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", type=int, metavar="N",
                       help="N workers on this machine, over 127.0.0.1")
    where.add_argument("--hosts", metavar="FILE",
                       help="one ssh destination per line: a worker (and a server) on each")
    parser.add_argument("--servers", type=int, default=None, metavar="S",
                        help="server processes (default: 1 with --local, one per host)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop everything after this long (default: no limit)")
    parser.add_argument("--port", type=int, default=None,
                        help="scheduler port (default: a free one)")
    parser.add_argument("--root-uri", default=None, metavar="ADDR",
                        help="--hosts: this machine's address as the hosts reach it "
                             "(default: the address of its hostname)")
    parser.add_argument("--interface", default=None, metavar="IF",
                        help="--hosts: network interface ps-lite uses (DMLC_INTERFACE)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command every process runs, after '--'")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command: give it after '--', e.g. -- python detection_train.py ...")
    if args.local is not None and args.local < 1:
        parser.error(f"--local {args.local}: expected a worker count >= 1")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout {args.timeout:g}: expected seconds > 0")
    return args


def plan(args, launcher):
    if args.local is not None:
        return launcher.plan_local(args.command, args.local, args.port or launcher.free_port(),
                                   num_servers=args.servers or 1)
    hosts = launcher.read_hosts(args.hosts)
    root_uri = args.root_uri or socket.gethostbyname(socket.gethostname())
    return launcher.plan_hosts(args.command, hosts, root_uri,
                               args.port or launcher.free_port(root_uri), os.getcwd(),
                               num_servers=args.servers, interface=args.interface)


def main(argv=None):
    args = parse_args(argv)
    launcher = load_launcher()
    try:
        nodes = plan(args, launcher)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return launcher.supervise(nodes, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
