"""scripts/setup.sh explains what to install, instead of failing obscurely, where it cannot install."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _path_without(tmp_path: Path, hidden: set[str]) -> str:
    """A PATH holding every tool of this machine except ``hidden`` (no apt-get, no MPI compiler)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            target = bin_dir / tool.name
            if tool.name not in hidden and not target.exists():
                target.symlink_to(tool)
    return str(bin_dir)


def test_missing_mpi_without_apt_says_what_to_install(tmp_path):
    path = _path_without(tmp_path, {"mpicc", "apt-get", "module"})
    env = {"PATH": path, "HOME": str(tmp_path), "FITSAE_PYTHON": sys.executable,
           "FITSAE_VENV": str(tmp_path / "venv")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "fitsae needs: openmpi-bin libopenmpi-dev" in proc.stderr
    assert "Install an MPI with its compiler wrappers (mpicc)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "venv").exists(), "nothing is half-installed"


def test_on_a_cluster_it_suggests_module_load(tmp_path):
    path = _path_without(tmp_path, {"mpicc", "apt-get"})
    env = {"PATH": path, "HOME": str(tmp_path), "FITSAE_PYTHON": sys.executable,
           "FITSAE_VENV": str(tmp_path / "venv"), "MODULESHOME": "/usr/share/modules"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "module load openmpi" in proc.stderr
