"""Shared test helpers: launching real ``mpirun`` jobs the way users do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def mpirun_command(np: int) -> list[str]:
    """``mpirun -np N`` as a user would type it, plus what root and small machines need."""
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.fail("mpirun not found: scripts/setup.sh installs Open MPI")
    cmd = [exe, "-np", str(np), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def run_mpi(np: int, args: list[str], *, cwd=None, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``mpirun -np N ARGS...`` with this venv first on PATH; output is captured as text."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.setdefault("FITSAE_THREADS", "1")
    full_env.update(env or {})
    return subprocess.run(mpirun_command(np) + list(args), cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def mpirun():
    """The :func:`run_mpi` helper as a fixture."""
    return run_mpi
