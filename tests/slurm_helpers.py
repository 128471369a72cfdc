"""The local SLURM cluster the ``slurm`` tests run against, and helpers to drive it.

The cluster is real: ``scripts/slurm-local.sh up`` installs slurmctld/slurmd/munge with apt when
they are missing (CI machines start bare), writes a one-node ``slurm.conf`` into a scratch
directory and starts munged, slurmctld and slurmd, recording their PIDs; ``down`` stops them by
those PIDs. The session fixture :func:`slurm_cluster` brings it up once and checks at the end that
every daemon it started is gone, so no test run leaves daemons behind on a shared machine.

Jobs are submitted with the environment of the test process (``sbatch`` exports it), with the
venv that runs pytest as ``FITSAE_VENV`` so jobs run exactly the code under test.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
VENV = Path(sys.prefix)

# Job states after which a job will not run again by itself.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@dataclass
class Cluster:
    """A running local cluster: its directory, ``slurm.conf`` and daemon PIDs."""

    directory: Path
    conf: Path
    pids: dict[str, int] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for SLURM clients and the jobs they submit."""
        env = dict(os.environ)
        # sbatch exports this environment to the job: a FITSAE_IMAGE meant for the container tests
        # must not turn the venv jobs into image jobs. Tests that want the image pass it in extra.
        for key in ("FITSAE_IMAGE", "FITSAE_BINDS"):
            env.pop(key, None)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["FITSAE_VENV"] = str(VENV)
        env["FITSAE_ROOT"] = str(REPO)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.update(extra)
        return env

    def run(self, args: list[str], *, cwd=None, env=None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client (or any command) against this cluster, output captured."""
        proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def sbatch(self, args: list[str], *, cwd, env=None) -> int:
        """Submit without waiting; return the job id."""
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (there is no slurmdbd, so no sacct)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
        fields: dict[str, str] = {}
        # Values may contain spaces only in Command=/WorkDir= etc. at the end; split on KEY= tokens.
        for match in re.finditer(r"(\S+?)=(.*?)(?=\s\S+?=|$)", out.strip()):
            fields[match.group(1)] = match.group(2)
        return fields

    def wait_for(self, job_id: int, predicate, what: str, *, deadline_s: float = 300) -> dict[str, str]:
        """Poll the job until ``predicate(fields)`` holds; fail with the job's fields when it does not."""
        end = time.monotonic() + deadline_s
        fields: dict[str, str] = {}
        while time.monotonic() < end:
            fields = self.job(job_id)
            if predicate(fields):
                return fields
            time.sleep(1)
        raise AssertionError(f"job {job_id}: {what} did not happen within {deadline_s:.0f} s; "
                             f"last state: {fields}\n{self.logs_tail()}")

    def wait_final(self, job_id: int, *, deadline_s: float = 400) -> dict[str, str]:
        return self.wait_for(job_id, lambda f: f.get("JobState") in FINAL_STATES,
                             "reaching a final state", deadline_s=deadline_s)

    def wait_previous_instance_gone(self, job_id: int, *, deadline_s: float = 120) -> None:
        """Wait until no node is COMPLETING and no ``slurmstepd`` of ``job_id`` is left.

        A requeued job normally waits ~2 min for its BeginTime, long after the node has cleaned up
        the previous instance. A test that releases it early must wait for that clean-up itself:
        launched while the old job's slurmstepd still exits, or within the second of the old
        instance's kill, the same job id fails to start (slurmd: "already killed").
        """
        end = time.monotonic() + deadline_s
        states, steps = "", ""
        while time.monotonic() < end:
            states = self.run(["sinfo", "-h", "-N", "-o", "%t"]).stdout.split()
            steps = subprocess.run(["pgrep", "-af", rf"slurmstepd: \[{job_id}\."],
                                   capture_output=True, text=True).stdout.strip()
            if states and all(s == "idle" for s in states) and not steps:
                # slurmd refuses a launch whose credential is not newer, in whole seconds, than the
                # old instance's revocation ("already killed, do not launch batch job"); SLURM's own
                # BeginTime delay exists for this. The revocation came before now: let the clock
                # pass into a later second before anyone releases the job.
                gone = time.time()
                time.sleep(max(0.0, math.floor(gone) + 2 - gone))
                return
            time.sleep(0.5)
        raise AssertionError(f"job {job_id}: node states {states}, steps left {steps!r} after "
                             f"{deadline_s:.0f} s\n{self.logs_tail()}")

    def logs_tail(self, lines: int = 30) -> str:
        """The end of the daemons' logs, for failure messages."""
        parts = []
        for log in sorted((self.directory / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def daemon_pids(self) -> dict[str, int]:
        pidfiles = {"munged": self.directory / "munge" / "munged.pid",
                    "slurmctld": self.directory / "slurmctld.pid",
                    "slurmd": self.directory / "slurmd.pid"}
        return {name: int(p.read_text().strip()) for name, p in pidfiles.items() if p.exists()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_cluster(directory: Path) -> Cluster:
    """``scripts/slurm-local.sh up DIR`` on a free pair of ports; skips (with the reason) where the
    cluster cannot exist."""
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.skip("the local SLURM cluster needs root (to install and run slurmctld/slurmd/munge)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("slurmctld is not installed and there is no apt-get to install it")
    env = dict(os.environ, FITSAE_SLURM_PORT=str(_free_port_pair()))
    proc = subprocess.run([str(SLURM_LOCAL), "up", str(directory)], capture_output=True, text=True,
                          timeout=600, env=env)
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm-local.sh up failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    cluster = Cluster(directory=directory, conf=directory / "slurm.conf")
    cluster.pids = cluster.daemon_pids()
    assert set(cluster.pids) == {"munged", "slurmctld", "slurmd"}, proc.stderr
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """``scripts/slurm-local.sh down DIR``, then check that every daemon we started is gone."""
    subprocess.run([str(SLURM_LOCAL), "down", str(cluster.directory)], capture_output=True,
                   text=True, timeout=120)
    left = {name: pid for name, pid in cluster.pids.items() if _alive(pid)}
    assert not left, f"daemons still running after slurm-local.sh down: {left}"
    shutil.rmtree(cluster.directory, ignore_errors=True)


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (slurmctld and slurmd), so a test cluster never
    collides with another one on the machine."""
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free pair of TCP ports on 127.0.0.1")


def cluster_directory() -> Path:
    """A fresh, short, world-traversable directory under /tmp for one cluster.

    Not pytest's tmp_path: that sits under a 0700 directory the munge user cannot enter, and
    munge and PMIx put UNIX sockets here, whose paths are limited to 108 bytes.
    """
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="fitsae-slurm-", dir="/tmp"))
    directory.chmod(0o755)
    return directory


_session_cluster: Cluster | None = None


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    """One local cluster for the whole session, stopped (by PID) when the session ends.

    Test modules import this fixture; the first one to use it starts the cluster and the others
    reuse it.
    """
    global _session_cluster
    if _session_cluster is None:
        _session_cluster = start_cluster(cluster_directory())
    yield _session_cluster
    if _session_cluster is not None:
        cluster, _session_cluster = _session_cluster, None
        stop_cluster(cluster)
