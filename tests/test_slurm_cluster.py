"""The local SLURM cluster itself: real daemons, a 2-rank MPI step through PMIx, clean shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurm_helpers import Cluster, cluster_directory, slurm_cluster, start_cluster, stop_cluster  # noqa: F401

pytestmark = pytest.mark.slurm


def test_srun_pmix_starts_two_horovod_ranks(slurm_cluster: Cluster):
    """`srun --mpi=pmix` is how train.sbatch launches: both ranks must join one Horovod job."""
    proc = slurm_cluster.run(["srun", "--mpi=pmix", "-n", "2", "fitsae", "doctor"], timeout=300)
    assert "doctor: OK" in proc.stdout
    ranks = [line for line in proc.stdout.splitlines() if line.startswith("ranks")]
    assert ranks and ranks[0].split()[1] == "2" and "backend horovod" in ranks[0], proc.stdout


def test_down_stops_every_daemon_by_pid():
    """A second cluster in its own directory and ports comes up idle and `down` leaves nothing."""
    cluster = start_cluster(cluster_directory())
    state = cluster.run(["sinfo", "-h", "-o", "%T"]).stdout.split()
    assert state == ["idle"]
    pids = dict(cluster.pids)
    stop_cluster(cluster)
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) survived down"
    assert not cluster.directory.exists()
