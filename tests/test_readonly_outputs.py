"""Read-only output locations: one line naming the place and exit 2, never a traceback.

The commands run as real processes of a user who cannot write there: as root, ``setpriv`` drops
the capabilities that let root write anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so the
kernel enforces the directory's permission bits exactly as for anyone else. A run directory that
is read-only (another user's run) must still be scorable with ``--out`` elsewhere.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eval_helpers import CONV, clean_env, shared_run

pytestmark = pytest.mark.slow

FITSAE = Path(sys.executable).parent / "fitsae"


def as_plain_user(args: list[str]) -> subprocess.CompletedProcess:
    """``fitsae ARGS`` without root's power to write into read-only directories."""
    cmd = [str(FITSAE), *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)


def read_only(path: Path) -> Path:
    """Take write permission away from ``path`` and everything under it."""
    for item in [path, *path.rglob("*")]:
        item.chmod(item.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return path


@pytest.fixture
def locked(tmp_path):
    """An empty read-only directory (write permission restored afterwards for the cleanup)."""
    path = tmp_path / "locked"
    path.mkdir()
    read_only(path)
    yield path
    path.chmod(0o755)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv", CONV)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_index_into_a_read_only_directory(conv_run, locked):
    proc = as_plain_user(["index", str(conv_run["test"]), "--out", str(locked / "m.jsonl"), "--tile", "16"])
    assert_one_line_error(proc, "fitsae index: cannot write the manifest", str(locked), "Permission denied")


def test_simulate_into_a_read_only_directory(locked):
    proc = as_plain_user(["simulate", "--kind", "toy", "--n", "2", "--size", "16", "--out", str(locked / "sim")])
    assert_one_line_error(proc, "fitsae simulate: cannot write", str(locked / "sim"), "Permission denied")
    assert not (locked / "sim").exists()


def test_compress_and_decompress_into_a_read_only_directory(conv_run, tmp_path, locked):
    image = next(conv_run["test"].glob("*.fits"))
    proc = as_plain_user(["compress", "--run-dir", str(conv_run["run"]), "--eta", "2", str(image),
                          "--out", str(locked)])
    assert_one_line_error(proc, "fitsae compress: cannot write", str(locked), "Permission denied")

    container = tmp_path / "c.fae.fits"
    done = as_plain_user(["compress", "--run-dir", str(conv_run["run"]), "--eta", "2", str(image),
                          "--out", str(container)])
    assert done.returncode == 0, done.stderr
    proc = as_plain_user(["decompress", str(container), "--out", str(locked)])
    assert_one_line_error(proc, "fitsae decompress: cannot write", str(locked), "Permission denied")


@pytest.fixture
def read_only_run(conv_run, tmp_path):
    """A copy of the trained run that nobody may write to (someone else's run)."""
    run = tmp_path / "theirs"
    subprocess.run(["cp", "-a", str(conv_run["run"]), str(run)], check=True)
    (run / "eval").mkdir(exist_ok=True)
    read_only(run)
    yield run
    for item in [run, *run.rglob("*")]:
        item.chmod(item.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_run_is_scored_elsewhere_without_tensorboard(conv_run, read_only_run, tmp_path):
    out = tmp_path / "myeval"
    proc = as_plain_user(["evaluate", "--run-dir", str(read_only_run), "--data", str(conv_run["test"]),
                          "--out", str(out), "--fpack-tiles", "0", "--etas", "1,4", "--no-plots"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert f"cannot write TensorBoard scalars ({read_only_run / 'tb' / 'eval'}: Permission denied)" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert [row["eta"] for row in report["results"]] == [1, 4]


def test_evaluate_into_a_read_only_run_says_to_use_out(conv_run, read_only_run):
    proc = as_plain_user(["evaluate", "--run-dir", str(read_only_run), "--data", str(conv_run["test"]),
                          "--fpack-tiles", "0"])
    assert_one_line_error(proc, "fitsae evaluate: cannot write the report", str(read_only_run / "eval"),
                          "Permission denied", "give --out DIR")


def test_unwritable_is_measured_not_guessed(tmp_path, locked):
    """The check behind these messages creates a file, so it agrees with the kernel."""
    from fitsae.outputs import unwritable

    assert unwritable(tmp_path / "new" / "dir") is None and (tmp_path / "new" / "dir").is_dir()
    probe = [sys.executable, "-c", "import sys; from fitsae.outputs import unwritable; print(unwritable(sys.argv[1]))",
             str(locked)]
    if os.geteuid() == 0:
        probe = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *probe]
    assert subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() == \
        f"{locked}: Permission denied"
    assert list(Path(locked).iterdir()) == []  # nothing left behind
