"""Mutation check: do the tests fail when the code breaks a claim it makes?

    python scripts/check_tests.py                 # every break in scripts/mutations.py
    python scripts/check_tests.py --only reseed --only iou_plus_one
    python scripts/check_tests.py --list

Copies the repository (the files git knows: tracked, plus untracked ones that are not ignored,
``git ls-files --cached --others --exclude-standard``) and the built operator library
(``simpledet/_lib/*.so``, so nothing is rebuilt) into a temporary folder, then for each break
of scripts/mutations.py: replaces its ``old`` text with ``new`` in the copy, runs
``pytest -x -q`` on the break's test files there (PYTHONPATH and the working directory point at
the copy; CLI tests run the copy's scripts), and puts the file back. A break is *caught* when
pytest reports failing tests (exit code 1). First the same tests run once on the unbroken copy:
a test that already fails would make every break look caught.

Exit code 0 when every break is caught; 1 when one is not (its claim has no test: write one);
2 when the check itself cannot run (a stale entry whose ``old`` text is gone, a baseline
failure, pytest unable to collect).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from mutations import MUTATIONS  # noqa: E402  (next to this script)

PYTEST_ARGS = ["-x", "-q", "-rf", "-p", "no:cacheprovider"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this break (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the breaks and exit")
    parser.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                        help="limit of one pytest run (default 900)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not run the tests on the unbroken copy first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args(argv)
    names = [m.name for m in MUTATIONS]
    for name in args.only:
        if name not in names:
            parser.error(f"unknown break {name!r}; known: {', '.join(names)}")
    return args


def repository_files(repo):
    """Paths (relative) of the tracked and the untracked-but-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(repo, p))]


def copy_repository(repo, dest):
    """Copies the git-known files and the built op library; returns how many files."""
    files = repository_files(repo)
    libs = [os.path.relpath(p, repo) for p in glob.glob(os.path.join(repo, "simpledet", "_lib",
                                                                     "*.so"))]
    if not libs:
        raise RuntimeError("simpledet/_lib/*.so not found: build it first (pip install -e .)")
    for rel in files + libs:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(repo, rel), target)
    return len(files) + len(libs)


def copy_env(copy):
    env = dict(os.environ, PYTHONPATH=copy + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1", COLUMNS="250")  # COLUMNS: longer -rf lines
    env.pop("SIMPLEDET_OPS_LIB", None)  # the copy's own library
    return env


def check_imports_from(copy):
    """Fails unless ``import simpledet`` in the copy loads the copy's package."""
    proc = subprocess.run([sys.executable, "-c", "import simpledet; print(simpledet.__file__)"],
                          cwd=copy, env=copy_env(copy), capture_output=True, text=True,
                          check=False)
    where = proc.stdout.strip()
    if proc.returncode or not os.path.realpath(where).startswith(os.path.realpath(copy)):
        raise RuntimeError(f"import simpledet in the copy gave {where or proc.stderr[-500:]!r}, "
                           f"not the copy in {copy}")


def run_pytest(copy, tests, timeout):
    """(pytest exit code or 'timeout', its output)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests], cwd=copy,
                              env=copy_env(copy), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return "timeout", output
    return proc.returncode, proc.stdout + proc.stderr


def failures(output, limit=2):
    """The first 'FAILED node - message' lines of pytest -rf output, shortened."""
    lines = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return [re.sub(r"\s+", " ", line)[:300] for line in lines[:limit]]


def apply(copy, mutation):
    """Writes the broken file into the copy; returns its original text."""
    path = os.path.join(copy, mutation.file)
    with open(path) as f:
        text = f.read()
    count = text.count(mutation.old)
    if count != 1:
        raise LookupError(f"{mutation.file}: the text to break occurs {count} times (expected "
                          f"once): {mutation.old!r}; update scripts/mutations.py")
    with open(path, "w") as f:
        f.write(text.replace(mutation.old, mutation.new))
    return text


def main(argv=None):
    args = parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:20s} {m.file}: {m.claim}\n{'':20s} tests: {' '.join(m.tests)}")
        return 0
    copy = tempfile.mkdtemp(prefix="simpledet_check_tests_")
    try:
        count = copy_repository(REPO, copy)
        check_imports_from(copy)
        print(f"copied {count} files to {copy}", flush=True)
        if not args.skip_baseline:
            tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
            start = time.monotonic()
            code, output = run_pytest(copy, tests, args.timeout)
            print(f"baseline (unbroken copy): pytest exit {code} in "
                  f"{time.monotonic() - start:.0f} s", flush=True)
            if code != 0:
                print(output[-3000:])
                print("error: the tests fail without any break; fix them first", file=sys.stderr)
                return 2
        results = []
        for mutation in chosen:
            start = time.monotonic()
            try:
                original = apply(copy, mutation)
            except LookupError as err:
                results.append((mutation, "STALE", [str(err)], 0.0))
                print(f"{mutation.name:20s} STALE      {err}", flush=True)
                continue
            try:
                code, output = run_pytest(copy, mutation.tests, args.timeout)
            finally:
                with open(os.path.join(copy, mutation.file), "w") as f:
                    f.write(original)
            seconds = time.monotonic() - start
            if code == 1:
                status, detail = "caught", failures(output)
            elif code == 0:
                status, detail = "NOT CAUGHT", [f"{' '.join(mutation.tests)} pass"]
            else:
                status = "ERROR"
                detail = [f"pytest exit {code}"] + output.strip().splitlines()[-5:]
            results.append((mutation, status, detail, seconds))
            print(f"{mutation.name:20s} {status:10s} {seconds:5.0f} s  {mutation.file}", flush=True)
            for line in detail:
                print(f"{'':20s}   {line}", flush=True)
    finally:
        if args.keep:
            print(f"kept the copy in {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)
    caught = sum(status == "caught" for _, status, _, _ in results)
    print(f"{caught} of {len(results)} breaks caught")
    missed = [m.name for m, status, _, _ in results if status == "NOT CAUGHT"]
    if missed:
        print(f"not caught (write the test that guards them): {', '.join(missed)}")
        return 1
    return 0 if caught == len(results) else 2


if __name__ == "__main__":
    sys.exit(main())
