"""Ctrl-C (a real SIGINT) to a real ``fitsae train`` process started alone, as from a terminal.

The first SIGINT stops training after the current step with a checkpoint and exit 75, like
SIGTERM; a second one exits at once (130) keeping the checkpoints already written; one that comes
before training started ends the process with one line. Never a traceback. (Under ``mpirun``, see
test_train_mpi.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fitsae.train.checkpoints import list_checkpoints
from fitsae.train.signals import EXIT_INTERRUPTED, EXIT_REQUEUE
from train_helpers import write_blob_fits

pytestmark = pytest.mark.slow

FITSAE = Path(sys.executable).parent / "fitsae"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """FITS fields and a config long enough that only a signal ends it."""
    root = tmp_path_factory.mktemp("interrupt")
    write_blob_fits(root / "fits", 8, 32, seed=5)
    config = {
        "data": {"paths": [str(root / "fits")], "tile": 32, "crop": 16, "batch_size": 4},
        "model": {"kind": "conv", "latent_channels": 4, "filters": [8, 8]},
        "train": {"steps": 1_000_000, "log_every": 10, "image_every": 0, "checkpoint_every": 1000,
                  "export": False},
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    return root


def _as_from_a_terminal() -> None:
    """A foreground job of a terminal starts with SIGINT at its default. The suite itself may run
    as a background job of a non-interactive shell (``./scripts/test.sh &``), whose children
    inherit SIGINT ignored, and Python then never raises KeyboardInterrupt (seen: the early
    Ctrl-C lost, training ran on for 300 s)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _as_a_background_job() -> None:
    """What ``cmd &`` in a script or ``nohup`` gives a process: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _training(experiment: Path, run: Path, preexec=_as_from_a_terminal):
    """A ``fitsae train`` process (stderr read as text), killed on the way out if still running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env["FITSAE_THREADS"] = "1"
    proc = subprocess.Popen([str(FITSAE), "train", "--config", str(experiment / "exp.yaml"), "--run-dir", str(run)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)
    try:
        yield proc
    finally:
        if proc.poll() is None:  # the test failed midway: leave nothing running
            proc.kill()
        proc.communicate()


def _read_until(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stderr:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"process ended before printing {text!r}:\n{''.join(lines)}")


def _finish(proc: subprocess.Popen, lines: list[str]) -> str:
    """Everything the process writes to stderr until it exits (bounded wait)."""
    _, rest = proc.communicate(timeout=300)
    return "".join(lines) + rest


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_exit_75(experiment):
    run = experiment / "once"
    lines = []
    with _training(experiment, run) as proc:
        _read_until(proc, "step 20/", lines)
        proc.send_signal(signal.SIGINT)
        stderr = _finish(proc, lines)
    assert proc.returncode == EXIT_REQUEUE, stderr[-4000:]
    assert stderr.count("SIGINT received, stopping after this step and checkpointing") == 1, stderr[-4000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    session = yaml.safe_load((run / "run.yaml").read_text())["sessions"][-1]
    assert session["exit_code"] == EXIT_REQUEUE and session["reason"] == f"stopped by SIGINT at step {session['end_step']}"
    assert list_checkpoints(run)[-1][0] == session["end_step"] >= 20


def test_a_background_job_that_inherited_sigint_ignored_keeps_training_through_it(experiment):
    run = experiment / "background"
    lines = []
    with _training(experiment, run, preexec=_as_a_background_job) as proc:
        _read_until(proc, "step 20/", lines)
        proc.send_signal(signal.SIGINT)
        step = len(lines)
        _read_until(proc, "step 40/", lines)  # two progress lines later it is still training
        proc.send_signal(signal.SIGTERM)
        stderr = _finish(proc, lines)
    assert "SIGINT" not in "".join(lines[step:]), stderr[-4000:]
    assert proc.returncode == EXIT_REQUEUE and "SIGTERM received" in stderr, stderr[-4000:]


def test_a_second_ctrl_c_exits_at_once_and_the_run_still_resumes(experiment):
    run = experiment / "twice"
    lines = []
    with _training(experiment, run) as proc:
        _read_until(proc, "step 20/", lines)
        proc.send_signal(signal.SIGINT)
        _read_until(proc, "SIGINT received", lines)
        proc.send_signal(signal.SIGINT)
        stderr = _finish(proc, lines)
    assert proc.returncode == EXIT_INTERRUPTED, stderr[-4000:]
    assert "second Ctrl-C, exiting now" in stderr and "Traceback" not in stderr
    # Whatever checkpoint was complete when it stopped is a valid place to resume from.
    newest = list_checkpoints(run)[-1][0] if list_checkpoints(run) else 0
    resumed = subprocess.run([str(FITSAE), "train", "--run-dir", str(run), "--set", f"train.steps={newest + 5}"],
                             capture_output=True, text=True, timeout=600, env=dict(os.environ, FITSAE_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert list_checkpoints(run)[-1][0] == newest + 5


def test_ctrl_c_before_training_starts_is_one_line(experiment):
    run = experiment / "early"
    with _training(experiment, run) as proc:
        # TensorFlow alone takes longer than this to import: the signal lands before the first step.
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        stderr = _finish(proc, [])
    assert proc.returncode == EXIT_INTERRUPTED, stderr[-4000:]
    assert "interrupted (Ctrl-C) before training started" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
