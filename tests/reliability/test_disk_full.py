"""The disk fills up while a checkpoint is written: the run stops with a message saying so, the
previous checkpoint survives and loads, and ``--resume`` continues from it.

Simulated by a checkpoint writer that fails with ENOSPC half way (always), and for real on a
small tmpfs mounted in a user namespace (where ``unshare`` may mount one)."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
from reliability_cli import (
    REPO,
    cli_env,
    experiment_dir,
    run_cli,
    train_args,
    write_dataset,
)

from simpledet.engine import checkpoint as ckpt

FULL_DISK_TRAIN = textwrap.dedent(f"""\
    '''detection_train.py whose second checkpoint write fails half way with ENOSPC.'''
    import errno
    import os
    import sys

    sys.path.insert(0, {str(REPO)!r})


    def main():
        import detection_train
        from simpledet.engine import checkpoint

        real_save_params = checkpoint.save_params
        calls = []

        def save_params(path, arg_params, aux_params):
            calls.append(path)
            if len(calls) == 1:
                return real_save_params(path, arg_params, aux_params)
            with open(path, "wb") as f:
                f.write(bytes(4096))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

        checkpoint.save_params = save_params
        return detection_train.main(sys.argv[1:])


    if __name__ == "__main__":
        sys.exit(main())
    """)


def assert_disk_full_stop(proc, output_root):
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    error = re.search(r"error: cannot write checkpoint \S*iter_0000008: (.*); the last "
                      r"complete checkpoint \S*iter_0000004 is intact", proc.stderr)
    assert error, proc.stderr[-3000:]
    root = ckpt.checkpoint_root(experiment_dir(output_root))
    assert os.listdir(root) == ["iter_0000004"]  # no half-written folder left behind
    assert ckpt.load_checkpoint(os.path.join(root, "iter_0000004")).iteration == 4
    return error[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root))
    return root


def test_enospc_during_a_checkpoint_keeps_the_previous_one(data_root, tmp_path):
    script = tmp_path / "full_disk_train.py"
    script.write_text(FULL_DISK_TRAIN)
    output_root = tmp_path / "out"
    proc = run_cli(script, train_args(data_root, output_root), cwd=tmp_path)
    reason = assert_disk_full_stop(proc, output_root)
    assert "No space left on device" in reason and ckpt.PARAMS_FILE in reason
    # Space freed: the run continues from the surviving checkpoint.
    proc = run_cli("detection_train.py",
                   train_args(data_root, output_root) + ["--resume", "--max-iter", "8"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(iteration 4)" in proc.stdout
    assert [it for it, _ in ckpt.list_checkpoints(experiment_dir(output_root))] == [4, 8]


def can_mount_tmpfs(folder):
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs '{folder}'"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def test_a_real_full_disk_keeps_the_previous_checkpoint(data_root, tmp_path):
    mount_point, copy = tmp_path / "mnt", tmp_path / "copy"
    mount_point.mkdir()
    copy.mkdir()
    if not can_mount_tmpfs(mount_point):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    # One checkpoint of the tiny model is ~29 MB (parameters + momentum): the first fits,
    # the second runs out of space in its parameter file.
    args = " ".join(shlex.quote(str(a)) for a in train_args(data_root, mount_point))
    command = (f"mount -t tmpfs -o size=40m tmpfs '{mount_point}' || exit 97\n"
               f"'{sys.executable}' '{REPO / 'detection_train.py'}' {args}\n"
               f"code=$?\ncp -a '{mount_point}/.' '{copy}/'\nexit $code\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", command], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False,
                          env=cli_env())
    reason = assert_disk_full_stop(proc, copy)
    assert "free" in reason, reason  # says how much space is left
