"""``mpirun -np 2 fitsae train`` on simulated FITS (dense Gaussian-blob fields), as users launch it.

One uninterrupted reference run is shared by the tests: the loss falls, both ranks end with
identical weights, checkpoints and TensorBoard events read back, η varies across steps and ranks.
A second run is stopped by SIGTERM to one rank, resumed, and must end where the reference did.
A third is stopped by SIGUSR1 sent to ``mpirun`` itself, as the README tells interactive users to do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BIN, mpirun_command, run_mpi
from fitsae.train.checkpoints import list_checkpoints, load_model
from fitsae.train.signals import EXIT_REQUEUE
from train_helpers import model_weights, read_events, write_blob_fits

pytestmark = pytest.mark.mpi

STEPS = 120


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpi_train")
    write_blob_fits(root / "fits", 8, 64, seed=3)
    config = {
        "data": {"paths": [str(root / "fits")], "tile": 32, "crop": 16, "batch_size": 8},
        "model": {"kind": "conv", "latent_channels": 8, "filters": [8, 8]},
        "optimizer": {"learning_rate": 0.005},
        "train": {"steps": STEPS, "seed": 11, "log_every": 10, "image_every": 60, "checkpoint_every": 60,
                  "trace_eta": True},
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def reference(experiment):
    run = experiment / "reference"
    done = run_mpi(2, ["fitsae", "train", "--config", str(experiment / "exp.yaml"), "--run-dir", str(run)])
    assert done.returncode == 0, done.stderr[-4000:]
    return run


def test_two_ranks_learn_and_stay_identical(reference):
    events = read_events(reference)
    mse = [v for _, _, v in sorted(events["mse"])]
    assert len(mse) == STEPS // 10
    quarter = len(mse) // 4
    assert np.mean(mse[-quarter:]) < 0.8 * np.mean(mse[:quarter]), mse
    for tag in ("nll", "lr/primary", "lr/variance", "perf/images_per_sec"):
        assert events[tag][0][1] == "scalars"
    assert any(t.startswith("mse_eta/") for t in events)
    assert any(t.startswith("images/eta_") and rows[0][1] == "images" for t, rows in events.items())
    session = yaml.safe_load((reference / "run.yaml").read_text())["sessions"][-1]
    assert session["world_size"] == 2 and session["backend"] == "horovod"
    digests = session["weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert [s for s, _ in list_checkpoints(reference)] == [60, 120]
    _, model, step = load_model(reference)
    assert step == STEPS and model.latent_channels == 8
    assert (reference / "export" / "saved_model.pb").is_file()


def test_eta_differs_between_steps_and_ranks(reference):
    rows = [json.loads(line) for line in (reference / "eta_trace.jsonl").read_text().splitlines()]
    eta = {(r["step"], r["rank"]): r["eta"] for r in rows}
    assert len(eta) == 2 * STEPS
    for rank in (0, 1):
        per_step = [eta[(s, rank)][0] for s in range(STEPS)]
        assert all(len(set(eta[(s, rank)])) == 1 for s in range(STEPS))  # one η per worker batch
        assert set(per_step) == set(range(1, 9))  # uniform over 1..C, all values drawn
    differ = sum(eta[(s, 0)][0] != eta[(s, 1)][0] for s in range(STEPS))
    assert differ > STEPS // 2


def _rank_pids(mpirun_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes mpirun started (read from their environment)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != mpirun_pid:
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=")[1])] = int(proc.name)
    return ranks


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped by init has finished)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_sigterm_on_one_rank_stops_all_saves_and_resume_matches(experiment, reference):
    run = experiment / "interrupted"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", FITSAE_THREADS="1")
    cmd = mpirun_command(2) + ["fitsae", "train", "--config", str(experiment / "exp.yaml"), "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, ranks = [], {}
    try:
        for line in proc.stderr:
            lines.append(line)
            if f"step 20/{STEPS}" in line:
                break
        ranks = _rank_pids(proc.pid)
        assert sorted(ranks) == [0, 1], "".join(lines)
        # Only rank 1 is signalled: rank 0 must learn it through the allreduced flag.
        os.kill(ranks[1], signal.SIGTERM)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # the test failed midway: leave no rank running
            proc.kill()
            for pid in ranks.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    stderr = "".join(lines) + rest
    assert proc.returncode == EXIT_REQUEUE, stderr[-4000:]
    session = yaml.safe_load((run / "run.yaml").read_text())["sessions"][-1]
    stopped_at = session["end_step"]
    assert 20 <= stopped_at < STEPS and session["exit_code"] == EXIT_REQUEUE
    assert "another rank" in session["reason"]  # rank 0 was not signalled itself
    assert list_checkpoints(run)[-1][0] == stopped_at
    assert session["weight_digests"][0] == session["weight_digests"][1]

    resumed = run_mpi(2, ["fitsae", "train", "--run-dir", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming {run} from step {stopped_at}" in resumed.stderr
    _, a, _ = load_model(reference)
    _, b, step = load_model(run)
    assert step == STEPS
    for wa, wb in zip(model_weights(a), model_weights(b), strict=True):
        np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-6)


def test_sigusr1_to_mpirun_stops_both_ranks_at_one_step_and_saves(experiment):
    """Open MPI forwards SIGUSR1 to every rank (SIGTERM would make mpirun kill them): the README's way
    to stop an interactive run keeping its progress."""
    run = experiment / "usr1"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", FITSAE_THREADS="1")
    cmd = mpirun_command(2) + ["fitsae", "train", "--config", str(experiment / "exp.yaml"), "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if f"step 20/{STEPS}" in line:
                break
        proc.send_signal(signal.SIGUSR1)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(lines) + rest
    assert proc.returncode == EXIT_REQUEUE, stderr[-4000:]
    session = yaml.safe_load((run / "run.yaml").read_text())["sessions"][-1]
    assert 20 <= session["end_step"] < STEPS and session["exit_code"] == EXIT_REQUEUE
    assert "SIGUSR1" in session["reason"], session["reason"]
    assert list_checkpoints(run)[-1][0] == session["end_step"]
    assert session["weight_digests"][0] == session["weight_digests"][1]


def test_ctrl_c_to_mpirun_ends_every_rank_and_the_run_resumes(experiment):
    """Measured with Open MPI 4.1: Ctrl-C reaches only mpirun (the ranks have process groups of their
    own), which sends SIGTERM to every rank and SIGKILL a second later and exits 1. Nothing may be
    left running, and the newest checkpoint on disk must be a valid place to resume from."""
    run = experiment / "ctrl_c"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", FITSAE_THREADS="1")
    cmd = mpirun_command(2) + ["fitsae", "train", "--config", str(experiment / "exp.yaml"), "--run-dir", str(run),
                               "--set", "train.checkpoint_every=10"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, ranks = [], {}
    try:
        for line in proc.stderr:
            lines.append(line)
            if f"step 20/{STEPS}" in line:
                break
        ranks = _rank_pids(proc.pid)
        assert sorted(ranks) == [0, 1], "".join(lines)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = "".join(lines) + rest
    assert proc.returncode != 0, stderr[-4000:]
    # mpirun may exit while the killed ranks are still being torn down: give them a bounded while.
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in ranks.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in ranks.values()), ranks
    newest = list_checkpoints(run)[-1][0]
    assert newest >= 20  # the checkpoint of step 20 was written before the signal

    resumed = run_mpi(2, ["fitsae", "train", "--run-dir", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming {run} from step {newest}" in resumed.stderr
    assert list_checkpoints(run)[-1][0] == STEPS


def test_an_error_on_rank_zero_alone_ends_the_job_instead_of_hanging(experiment, tmp_path):
    """Rank 0's export fails (its path is a file): the job ends with the error and exit 1, rather
    than rank 1 waiting in the closing collective for ever (the mpirun would never return)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "export").write_text("not a directory")
    cfg = yaml.safe_load((experiment / "exp.yaml").read_text())
    cfg["train"].update(steps=4, export=True, checkpoint_every=4, image_every=0)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    done = run_mpi(2, ["fitsae", "train", "--config", str(tmp_path / "exp.yaml"), "--run-dir", str(run)],
                   timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "aborting every rank" in done.stderr
