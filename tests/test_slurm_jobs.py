"""slurm/train.sbatch, evaluate.sbatch and submit.sh against the real local cluster.

Every job runs the real smoke training (train/smoke.yaml) with two ranks through
``srun --mpi=pmix``: exit codes, checkpoints and TensorBoard events are checked on disk, a
preempted job must be requeued and resume from its checkpoint, and an evaluation must wait for
its training. Data are a few tiny simulated FITS files.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from slurm_helpers import REPO, VENV, Cluster, slurm_cluster  # noqa: F401

pytestmark = pytest.mark.slurm

SMOKE = REPO / "train" / "smoke.yaml"
TRAIN = REPO / "slurm" / "train.sbatch"
SUBMIT = REPO / "slurm" / "submit.sh"


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    """A handful of small toy FITS images, made by the real simulator."""
    out = tmp_path_factory.mktemp("slurm-data")
    subprocess.run([str(VENV / "bin" / "fitsae"), "simulate", "--kind", "toy", "--n", "16", "--size", "32",
                    "--out", str(out), "--seed", "3"], check=True, capture_output=True, timeout=300)
    assert list(out.glob("*.fits"))
    return out


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A submit directory with the logs/ subdirectory the sbatch scripts write to."""
    (tmp_path / "logs").mkdir()
    return tmp_path


def smoke_overrides(data: Path, steps: int | None = None, export: bool = True) -> list[str]:
    """`--set` options: the smoke config on the test's data, optionally longer or without the
    SavedModel export (which the preemption and evaluation tests do not look at)."""
    sets = ["--set", f"data.paths=[{data}]"]
    if steps is not None:
        sets += ["--set", f"train.steps={steps}", "--set", f"train.checkpoint_every={steps}"]
    if not export:
        sets += ["--set", "train.export=false"]
    return sets


def job_log(workdir: Path, job_id: int) -> str:
    logs = list((workdir / "logs").glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else ""


def assert_trained(run: Path) -> None:
    """Checkpoints, the resolved params and real TensorBoard scalars are on disk."""
    assert (run / "params.yaml").is_file()
    assert (run / "checkpoints" / "checkpoint").is_file(), sorted(p.name for p in run.rglob("*"))
    assert list((run / "checkpoints").glob("ckpt-*.index"))
    events = list((run / "tb").rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {run / 'tb'}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = 0
    for event_file in events:
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars += len(tags.get("scalars", [])) + len(tags.get("tensors", []))
    assert scalars > 0, f"event files {events} hold no scalar/tensor summaries"


@pytest.fixture(autouse=True)
def _needs_smoke_config():
    if not SMOKE.exists():
        pytest.fail("train/smoke.yaml is missing (the training area provides it)")


def test_train_job_with_two_tasks_completes(slurm_cluster: Cluster, workdir: Path, smoke_data: Path):
    run = workdir / "run"
    proc = slurm_cluster.run(
        ["sbatch", "--wait", "--parsable", "--nodes=1", "--ntasks-per-node=2", str(TRAIN), str(SMOKE), str(run),
         *smoke_overrides(smoke_data)],
        cwd=workdir, timeout=600, check=False)
    job_id = int(proc.stdout.strip().split(";")[0])
    log = job_log(workdir, job_id)
    assert proc.returncode == 0, f"sbatch --wait exited {proc.returncode}\n{proc.stderr}\n{log}"
    fields = slurm_cluster.job(job_id)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", fields
    assert "2 tasks" in log and "launcher: venv" in log and "exit code 0" in log, log
    assert_trained(run)


def test_preempted_job_is_requeued_and_resumes_from_checkpoint(slurm_cluster: Cluster, workdir: Path,
                                                                  smoke_data: Path):
    run = workdir / "run"
    # Long enough that the signal lands mid-training on a busy machine; it stops early anyway.
    steps = 100
    job_id = slurm_cluster.sbatch(["--ntasks-per-node=2", str(TRAIN), str(SMOKE), str(run),
                                   *smoke_overrides(smoke_data, steps, export=False), "--set", "train.log_every=5"],
                                  cwd=workdir)
    # Preempt only once training is really stepping (a progress line after the first steps).
    deadline = time.monotonic() + 300
    while not re.search(r"step \d+/%d" % steps, job_log(workdir, job_id)):
        assert time.monotonic() < deadline, f"training never logged a step\n{job_log(workdir, job_id)}"
        assert slurm_cluster.job(job_id)["JobState"] in {"PENDING", "RUNNING"}, job_log(workdir, job_id)
        time.sleep(1)

    slurm_cluster.run(["scancel", "--batch", "--signal=USR1", str(job_id)])

    requeued = slurm_cluster.wait_for(
        job_id, lambda f: f.get("Restarts") == "1" and f.get("JobState") == "PENDING",
        "requeue after exit 75", deadline_s=300)
    log = job_log(workdir, job_id)
    assert "exit 75" in log and "scontrol requeue" in log, log
    assert (run / "checkpoints" / "checkpoint").is_file()
    # SLURM holds a requeued job until its BeginTime (about two minutes); release it as soon as the
    # node has cleaned up the first instance.
    assert requeued.get("Reason") in {"BeginTime", "None", "Priority", "Resources"}, requeued
    slurm_cluster.wait_previous_instance_gone(job_id)
    slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    final = slurm_cluster.wait_final(job_id, deadline_s=600)
    log = job_log(workdir, job_id)
    assert final["JobState"] == "COMPLETED" and final["ExitCode"] == "0:0", \
        f"{final}\n{log}\n{slurm_cluster.logs_tail(60)}"
    assert "(restart 1)" in log, log
    resumed = re.findall(r"resuming \S+ from step (\d+)", log)
    assert resumed and int(resumed[-1]) > 0, log
    assert f"step {steps}/{steps}" in log, log[-3000:]
    assert_trained(run)


def test_submit_chains_evaluate_after_training(slurm_cluster: Cluster, workdir: Path, smoke_data: Path):
    run = workdir / "run"
    proc = slurm_cluster.run([str(SUBMIT), "--config", str(SMOKE), "--run-dir", str(run),
                              "--data", str(smoke_data), *smoke_overrides(smoke_data, export=False)],
                             cwd=workdir)
    ids = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
    train_id, eval_id = int(ids["TRAIN_JOB"]), int(ids["EVAL_JOB"])
    first = slurm_cluster.job(eval_id)
    assert first["Dependency"].startswith(f"afterok:{train_id}"), first
    if slurm_cluster.job(train_id)["JobState"] in {"PENDING", "RUNNING"}:
        assert first["JobState"] == "PENDING", first

    train = slurm_cluster.wait_final(train_id, deadline_s=600)
    assert train["JobState"] == "COMPLETED", (train, job_log(workdir, train_id))
    evaluation = slurm_cluster.wait_final(eval_id, deadline_s=600)
    assert evaluation["JobState"] == "COMPLETED", (evaluation, job_log(workdir, eval_id))
    assert evaluation["StartTime"] >= train["EndTime"], (train, evaluation)
    report = run / "eval" / "report.json"
    assert report.is_file(), job_log(workdir, eval_id)
    import json

    results = json.loads(report.read_text())["results"]
    assert results and all("eta" in r and "ae" in r for r in results)


def test_submit_sweep_is_a_job_array_over_seeds(slurm_cluster: Cluster, workdir: Path, smoke_data: Path):
    root = workdir / "sweep"
    env = slurm_cluster.env(FITSAE_TASKS_PER_NODE="1")
    proc = slurm_cluster.run([str(SUBMIT), "--sweep", "--configs", str(SMOKE), "--seeds", "11,12",
                              "--run-root", str(root), "--no-eval",
                              *smoke_overrides(smoke_data, steps=10, export=False)],
                             cwd=workdir, env=env)
    ids = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
    array_id = int(ids["TRAIN_JOB"])
    assert slurm_cluster.job(array_id).get("ArrayJobId") == str(array_id)
    deadline = time.monotonic() + 600
    while slurm_cluster.run(["squeue", "-h", "-j", str(array_id)]).stdout.strip():
        assert time.monotonic() < deadline, slurm_cluster.run(["squeue", "-j", str(array_id)]).stdout
        time.sleep(2)
    for task in (0, 1):
        # Array tasks are addressed as ARRAYID_TASK.
        out = slurm_cluster.run(["scontrol", "show", "job", "-o", f"{array_id}_{task}"]).stdout
        assert "JobState=COMPLETED" in out and "ExitCode=0:0" in out, out
    for seed in (11, 12):
        run = root / f"smoke-seed{seed}"
        params = (run / "params.yaml").read_text()
        assert re.search(rf"\bseed: {seed}\b", params), params
        assert list((run / "checkpoints").glob("ckpt-*.index"))
