"""slurm/submit.sh refuses, before calling sbatch, what would fail when the job starts.

No SLURM is needed: the ``sbatch`` first on PATH here only records that it was called (and
answers a job id), so each refusal is shown to happen before any job could be queued, and the
accepted case shows that the same setup does reach sbatch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "slurm" / "submit.sh"
SMOKE = REPO / "train" / "smoke.yaml"


def submit(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """Run submit.sh from ``tmp_path``; returns the process and whether sbatch was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    called = tmp_path / "sbatch-was-called"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho \"$@\" >> {called}\necho 4242\n")
    sbatch.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FITSAE_VENV=sys.prefix)
    proc = subprocess.run(["bash", str(SUBMIT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, called.exists()


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_a_valid_config_reaches_sbatch(tmp_path, data):
    proc, called = submit(tmp_path, "--config", str(SMOKE), "--run-dir", "runs/r", "--data", str(data),
                          "--set", f"data.paths=[{data}]")
    assert proc.returncode == 0, proc.stderr
    assert called and "TRAIN_JOB=4242" in proc.stdout and "EVAL_JOB=4242" in proc.stdout


@pytest.mark.parametrize("case", ["missing config", "unknown key in --set", "unknown key in the file",
                                  "missing data path", "tile not a multiple of the stride", "missing --data"])
def test_a_job_that_would_fail_is_never_queued(tmp_path, data, case):
    config, sets, eval_data, expect = str(SMOKE), ["--set", f"data.paths=[{data}]"], str(data), ""
    if case == "missing config":
        config, expect = str(tmp_path / "nope.yaml"), f"config {tmp_path / 'nope.yaml'} not found"
    elif case == "unknown key in --set":
        sets, expect = sets + ["--set", "train.stpes=3"], "train.stpes"
    elif case == "unknown key in the file":
        bad = yaml.safe_load(SMOKE.read_text())
        bad["train"]["stpes"] = 3
        config = str(tmp_path / "bad.yaml")
        Path(config).write_text(yaml.safe_dump(bad))
        expect = "train.stpes"
    elif case == "missing data path":
        sets, expect = ["--set", f"data.paths=[{tmp_path / 'typo'}]"], str(tmp_path / "typo")
    elif case == "tile not a multiple of the stride":
        sets, expect = sets + ["--set", "data.tile=30"], "data.tile=30 is not a multiple"
    elif case == "missing --data":
        eval_data, expect = str(tmp_path / "heldout"), f"--data {tmp_path / 'heldout'}"
    proc, called = submit(tmp_path, "--config", config, "--run-dir", "runs/r", "--data", eval_data, *sets)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stderr and "nothing submitted" in proc.stderr
    assert not called
    assert "TRAIN_JOB" not in proc.stdout


def test_a_sweep_with_one_bad_config_is_never_queued(tmp_path, data):
    bad = yaml.safe_load(SMOKE.read_text())
    bad["model"]["filterz"] = [8]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc, called = submit(tmp_path, "--sweep", "--configs", f"{SMOKE},{tmp_path / 'bad.yaml'}", "--seeds", "1,2",
                          "--run-root", "runs/sweep", "--data", str(data), "--set", f"data.paths=[{data}]")
    assert proc.returncode == 2 and "model.filterz" in proc.stderr
    assert not called and not (tmp_path / "runs" / "sweep" / "sweep.tsv").exists()
