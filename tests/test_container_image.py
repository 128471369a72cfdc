"""The Apptainer image built from containers/fitsae.def over containers/fitsae-stack.def: it
holds this source tree, its %test passes, its labels name the pinned stack, and 2-rank runs go
through the real local SLURM cluster (``srun --mpi=pmix apptainer exec``, and train.sbatch with
FITSAE_IMAGE).

The image is built by ``scripts/build-container.sh`` into a path keyed by a hash of the source it
installs (over a stack image keyed by the pins and recipe). When it is missing, the first of these
tests builds it, so a fresh checkout tests its own code, and a change that breaks fitsae inside the
image fails here: the code layer over a cached stack took 42 s plus 27 s of %test on 2 cores; the
stack, once per machine, took 82 min on 2 cores shared with a training job (keep the cache,
/var/tmp/fitsae-images, between CI runs). A failed build fails these tests; it never skips them.
FITSAE_IMAGE names an image to use instead (built there when missing); FITSAE_BUILD_CONTAINER=0
skips them when no image exists rather than building one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from slurm_helpers import REPO, Cluster, slurm_cluster  # noqa: F401

# A build happens in the fixture, inside whichever test runs first: the code layer in a minute or
# two, the stack (only when the machine has none cached) in up to ~1.5 h.
pytestmark = [pytest.mark.container, pytest.mark.timeout(6000)]

BUILD = REPO / "scripts" / "build-container.sh"
APPTAINER = os.environ.get("FITSAE_APPTAINER") or str(REPO / "scripts" / "apptainer.sh")


def _can_run_apptainer() -> bool:
    return bool(shutil.which("apptainer") or shutil.which("singularity") or os.geteuid() == 0)


def _print_path(root: Path, what: str = "--print-path") -> str:
    return subprocess.run([str(root / "scripts" / "build-container.sh"), what], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def image() -> Path:
    if not _can_run_apptainer():
        pytest.skip("no apptainer/singularity on PATH and not root (scripts/apptainer.sh needs root to set one up)")
    given = os.environ.get("FITSAE_IMAGE")
    path = given or _print_path(REPO)
    if not Path(path).is_file():
        if os.environ.get("FITSAE_BUILD_CONTAINER") == "0":
            pytest.skip(f"no image at {path}, and FITSAE_BUILD_CONTAINER=0 says not to build one")
        # Without an argument the script builds the cache path, or waits for a concurrent build of it.
        proc = subprocess.run([str(BUILD)] + ([path] if given else []), capture_output=True, text=True,
                              timeout=5900)
        assert proc.returncode == 0, f"build failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"
        assert proc.stdout.strip().splitlines()[-1] == path, proc.stdout
    return Path(path)


def test_a_source_change_gets_its_own_code_layer_over_the_same_stack(tmp_path: Path):
    """The image path is keyed on the installed source: editing fitsae/ (or a config) gives a new
    image, editing the tests does not, and neither rebuilds the stack."""
    copy = tmp_path / "tree"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    assert _print_path(copy) == _print_path(REPO)
    stack = _print_path(copy, "--print-stack-path")
    with (copy / "tests" / "conftest.py").open("a") as f:
        f.write("\n# a test-only edit\n")
    assert _print_path(copy) == _print_path(REPO)
    with (copy / "fitsae" / "budget.py").open("a") as f:
        f.write("\n# a source edit\n")
    assert _print_path(copy) != _print_path(REPO)
    assert _print_path(copy, "--print-stack-path") == stack
    with (copy / "constraints.txt").open("a") as f:
        f.write("\n# a pin edit\n")
    assert _print_path(copy, "--print-stack-path") != stack


def apptainer(*args: str, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([APPTAINER, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_image_holds_this_source_tree(image: Path):
    """Every module of the installed fitsae is byte for byte this tree's: the tests run the code
    they sit next to, not whatever a long-lived image had baked in."""
    script = ("import fitsae, hashlib, json, pathlib; root = pathlib.Path(fitsae.__file__).parent; "
              "print(json.dumps({str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() "
              "for p in sorted(root.rglob('*.py'))}))")
    proc = apptainer("exec", str(image), "python", "-c", script)
    assert proc.returncode == 0, proc.stderr
    inside = json.loads(proc.stdout)
    here = {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((REPO / "fitsae").rglob("*.py"))}
    assert inside == here
    labels = apptainer("inspect", "--labels", str(image)).stdout
    assert f"org.fitsae.source-key: {image.stem.removeprefix('fitsae-')}" in labels, labels


def test_image_self_test_passes(image: Path):
    """The recipe's %test: `fitsae doctor`, a 2-rank doctor and a 2-rank smoke training inside."""
    proc = apptainer("test", str(image))
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "doctor: OK" in proc.stdout and "fitsae image test: OK" in proc.stdout, proc.stdout[-4000:]


def test_image_labels_record_the_pinned_stack(image: Path):
    proc = apptainer("inspect", "--labels", str(image))
    assert proc.returncode == 0, proc.stderr
    labels = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert labels["org.fitsae.tensorflow"] == pins["tensorflow_cpu"]
    assert labels["org.fitsae.horovod"] == pins["horovod"]
    assert labels["org.fitsae.keras"] == pins["keras"]
    host_mpi = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    host_major = re.search(r"\(Open MPI\) (\d+)\.", host_mpi).group(1)
    assert labels["org.fitsae.openmpi"].split(".")[0] == host_major, (labels, host_mpi)


@pytest.mark.skipif(not os.access("/", os.W_OK), reason="needs a writable / to make a top-level directory")
def test_exec_sees_host_directories_outside_the_usual_ones(image: Path, tmp_path: Path):
    """Data under /scratch or /lustre, or a checkout under /check: named by `--bind`, or the working
    directory, it is visible inside (scripts/apptainer.sh once knew only /work, /tmp, /home, ...)."""
    top = Path("/") / f"fitsae-bindtest-{os.getpid()}"
    (top / "data").mkdir(parents=True)
    try:
        (top / "data" / "f.txt").write_text("from the host\n")
        proc = apptainer("exec", "--bind", f"{top / 'data'}", str(image), "cat", str(top / "data" / "f.txt"))
        assert proc.returncode == 0 and proc.stdout == "from the host\n", proc.stderr
        proc = subprocess.run([APPTAINER, "exec", str(image), "cat", "f.txt"], cwd=top / "data",
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and proc.stdout == "from the host\n", proc.stderr
    finally:
        shutil.rmtree(top)


@pytest.mark.slurm
def test_srun_pmix_runs_two_ranks_in_the_image(image: Path, slurm_cluster: Cluster):
    """Hybrid model: host srun + PMIx start the ranks, the image's Open MPI joins them."""
    proc = slurm_cluster.run(["srun", "--mpi=pmix", "-n", "2", APPTAINER, "exec", str(image), "fitsae", "doctor"],
                             timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    ranks = [line for line in proc.stdout.splitlines() if line.startswith("ranks")]
    assert ranks and ranks[0].split()[1] == "2" and "backend horovod" in ranks[0], proc.stdout
    assert "/opt/fitsae/venv/bin/python" in proc.stdout, "doctor did not run the image's Python"


@pytest.mark.slurm
def test_train_sbatch_runs_inside_the_image(image: Path, slurm_cluster: Cluster, tmp_path: Path):
    """slurm/train.sbatch with FITSAE_IMAGE: the smoke training on 2 ranks, in the container."""
    (tmp_path / "logs").mkdir()
    data = tmp_path / "data"
    sim = apptainer("exec", "--bind", str(tmp_path), str(image), "fitsae", "simulate", "--kind", "toy",
                    "--n", "16", "--size", "32", "--out", str(data), "--seed", "5")
    assert sim.returncode == 0, sim.stderr
    run = tmp_path / "run"
    env = slurm_cluster.env(FITSAE_IMAGE=str(image), FITSAE_APPTAINER=APPTAINER)
    proc = slurm_cluster.run(
        ["sbatch", "--wait", "--parsable", "--ntasks-per-node=2", str(REPO / "slurm" / "train.sbatch"),
         str(REPO / "train" / "smoke.yaml"), str(run), "--set", f"data.paths=[{data}]", "--set", "train.export=false"],
        cwd=tmp_path, env=env, timeout=900, check=False)
    job_id = proc.stdout.strip().split(";")[0]
    log = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob(f"*-{job_id}.out"))
    assert proc.returncode == 0, f"{proc.stderr}\n{log}"
    assert f"launcher: image {image}" in log, log
    assert list((run / "checkpoints").glob("ckpt-*.index")), log
    assert list((run / "tb").rglob("events.out.tfevents.*")), log
