"""Workers: Horovod + mpi4py when launched by ``mpirun``/``srun``, one plain process otherwise.

Contract: everything distributed in fitsae goes through this module, so the same code runs on
1 or 500 ranks. :func:`init_workers` reads the launcher's environment: a plain call never
imports Horovod or mpi4py (they would start MPI, and may fail on a login node); under MPI,
mpi4py starts first and hands ``COMM_WORLD`` to Horovod, so both share one communicator.
:func:`allreduce_sum` is exact (float64 sums and counts, so a global mean weighs every item
once); :func:`comm` is mpi4py's communicator, or :class:`SingleComm` for a world of one.

Why: one entry point is where the launcher quirks and the Keras 3 ⇄ Horovod variable fix
(:func:`gradient`, :func:`broadcast`) live, instead of in every caller.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from fitsae.errors import FitsaeError

__all__ = [
    "Workers",
    "DistributedError",
    "init_workers",
    "workers",
    "comm",
    "gradient",
    "broadcast",
    "allreduce_sum",
    "allreduce_max_array",
    "allreduce_max",
    "is_root",
    "root_print",
    "my_share",
    "gather_shares",
    "launcher_environment",
]

# Variables a process manager sets in every rank it starts. Their presence means "we are one rank
# of an MPI job"; PMIX_RANK covers srun --mpi=pmix and Open MPI 5, OMPI_* Open MPI 4's mpirun,
# PMI_* MPICH/Intel MPI/srun --mpi=pmi2.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedError(FitsaeError, RuntimeError):
    """The job was launched in a way fitsae cannot run distributed; the message says what to do."""


@dataclass(frozen=True)
class Workers:
    """Where this process stands in the job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    backend: str  # "single" or "horovod"

    @property
    def is_root(self) -> bool:
        return self.rank == 0


_workers: Workers | None = None
_hvd: Any = None
_comm: Any = None


class SingleComm:
    """The mpi4py collectives fitsae uses, for a world of one process (no MPI started)."""

    rank = 0
    size = 1

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def allgather(self, obj):
        return [obj]

    def gather(self, obj, root: int = 0):
        return [obj]

    def bcast(self, obj, root: int = 0):
        return obj

    def allreduce(self, obj, op=None):
        return obj

    def Barrier(self) -> None:
        return None


def launcher_environment() -> dict[str, str]:
    """The MPI/SLURM launcher variables visible to this process (for ``fitsae doctor``)."""
    keys = _LAUNCHER_VARS + ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_RANK")
    return {k: os.environ[k] for k in keys if k in os.environ}


def _launched_by_mpi() -> bool:
    return any(k in os.environ for k in _LAUNCHER_VARS)


def init_workers(mode: str | None = None, configure_tensorflow: bool = True) -> Workers:
    """Start (or join) the job and return this process's rank, size, local rank and local size.

    Parameters
    ----------
    mode : {"auto", "single", "horovod"}, optional
        ``auto`` (default, or ``$FITSAE_DISTRIBUTED``) uses Horovod exactly when a process manager
        started us. ``single`` never touches MPI; ``horovod`` insists on it.
    configure_tensorflow : bool
        Pin each rank's GPU (with memory growth) and split CPU threads between the ranks of a
        node. Done here because TensorFlow accepts it only before its runtime starts.

    Raises
    ------
    DistributedError
        Under ``srun`` with several tasks but no MPI process manager (every task would believe it
        is alone and they would overwrite each other's run directory), or when Horovod is
        missing or was built without MPI.
    """
    global _workers, _hvd, _comm
    if _workers is not None:
        return _workers
    mode = mode or os.environ.get("FITSAE_DISTRIBUTED", "auto")
    if mode not in ("auto", "single", "horovod"):
        raise DistributedError(f"FITSAE_DISTRIBUTED={mode!r}: expected auto, single or horovod")
    use_mpi = mode == "horovod" or (mode == "auto" and _launched_by_mpi())
    if not use_mpi:
        ntasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
        if mode == "auto" and ntasks > 1 and "SLURM_PROCID" in os.environ and "SLURM_STEP_ID" in os.environ:
            raise DistributedError(
                f"started by srun as one of {ntasks} tasks, but without an MPI process manager: "
                "launch with `srun --mpi=pmix fitsae ...` (or the PMI type your site's MPI was built "
                "with, see `srun --mpi=list`), or run `mpirun -np N fitsae ...` inside the allocation"
            )
        _workers = Workers(rank=0, size=1, local_rank=0, local_size=1, backend="single")
        _comm = SingleComm()
    else:
        # Open MPI busy-polls while a rank waits in a collective. Each rank here also runs
        # TensorFlow's compute threads and Horovod's background thread, so the spinning steals
        # the cores the ranks compute on: on 2 cores, 2 ranks went from 340 to 540 images/s with
        # yielding (benchmarks/scaling.py). Read at MPI_Init, so set before mpi4py starts MPI;
        # a value from the user or the launcher wins.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        try:
            from mpi4py import MPI  # must come before horovod so both share COMM_WORLD
            import horovod.tensorflow as hvd
        except ImportError as err:
            raise DistributedError(
                f"launched under MPI but {err.name or 'horovod/mpi4py'} is not importable ({err}); "
                "run scripts/setup.sh, or see README 'Installing by hand'"
            ) from err
        hvd.init(comm=MPI.COMM_WORLD)
        if not hvd.mpi_enabled():
            raise DistributedError(
                "Horovod is running without MPI (built without it?); rebuild with "
                "HOROVOD_WITH_MPI=1, see `fitsae doctor`"
            )
        _hvd, _comm = hvd, MPI.COMM_WORLD
        _workers = Workers(
            rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
            local_size=hvd.local_size(), backend="horovod",
        )
    if configure_tensorflow:
        _configure_tensorflow(_workers)
    _configure_logging(_workers)
    return _workers


def _configure_tensorflow(w: Workers) -> None:
    import tensorflow as tf

    try:
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            gpu = gpus[w.local_rank % len(gpus)]
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices([gpu], "GPU")
        threads = os.environ.get("FITSAE_THREADS")
        if threads:
            n = int(threads)
        else:
            allowed = len(os.sched_getaffinity(0))
            # mpirun may already have bound us to a core (then `allowed` is our share); if we see
            # the whole node, share it with the other ranks on it.
            n = allowed // w.local_size if allowed == os.cpu_count() else allowed
        n = max(1, n)
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, n)))
    except RuntimeError:
        # TensorFlow's runtime already started (e.g. a test imported and used it first);
        # its existing settings stay in force.
        pass


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    Bound once per process, a handler holding the ``sys.stderr`` of set-up time keeps writing to
    it after it is replaced and closed (pytest's capture of an earlier test, a redirecting tool).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(w: Workers) -> None:
    logger = logging.getLogger("fitsae")
    if not logger.handlers:
        handler = _StderrHandler()
        prefix = f"[rank {w.rank}] " if w.size > 1 else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    # Other ranks stay quiet unless something is wrong.
    logger.setLevel(logging.INFO if w.is_root else logging.WARNING)


def workers() -> Workers:
    """The :class:`Workers` of this process, initialising a single process if nobody did."""
    return _workers if _workers is not None else init_workers()


def comm():
    """mpi4py's ``COMM_WORLD`` under MPI, a :class:`SingleComm` otherwise."""
    workers()
    return _comm


def is_root() -> bool:
    return workers().is_root


def root_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only: results and progress appear once, not once per rank."""
    if is_root():
        print(*args, **kwargs, flush=True)


def my_share(items: Sequence) -> list:
    """This rank's share of ``items`` (files to compress, containers to decode): every ``size``-th
    one from its rank, so neighbours in a sorted list (one night, similar sizes) spread over ranks;
    all of them in a single process. :func:`gather_shares` puts the results back in order."""
    w = workers()
    return list(items)[w.rank::w.size]


def gather_shares(mine: list) -> list:
    """Every rank's results of :func:`my_share` on rank 0, in the order of the shared items; []
    on the other ranks (they have printed nothing, rank 0 reports the whole job once)."""
    parts = comm().gather(list(mine), root=0)
    if not is_root():
        return []
    size = len(parts)
    return [parts[i % size][i // size] for i in range(sum(len(p) for p in parts))]


def _backing(variables: Iterable) -> list:
    # Horovod 0.28.1 understands only tf.Variable ('Variable' object has no attribute 'ref',
    # Horovod issue #4290): it gets the tf.Variable each Keras 3 variable wraps in `.value`,
    # while the optimizers keep the Keras variables. Plain tf.Variables pass through.
    out = []
    for v in variables:
        value = getattr(v, "value", None)
        out.append(value if value is not None and hasattr(value, "assign") else v)
    return out


def gradient(tape, loss, variables: Sequence) -> list:
    """Gradients of ``loss`` with respect to ``variables``, averaged over all ranks.

    Works eagerly and inside ``tf.function``. ``variables`` are Keras variables; pass them (not
    the returned list's backing variables) to ``optimizer.apply_gradients``.
    """
    backing = _backing(variables)
    if _hvd is not None:
        return _hvd.DistributedGradientTape(tape).gradient(loss, backing)
    return tape.gradient(loss, backing)


def _collect_variables(objects: Iterable) -> list:
    variables = []
    for obj in objects:
        if hasattr(obj, "variables") and not isinstance(obj, (list, tuple)):
            variables.extend(obj.variables)
        else:
            variables.extend(obj)
    return variables


def broadcast(*objects, root: int = 0) -> None:
    """Copy rank ``root``'s values of models, optimizers or variable lists to every rank.

    Optimizers must be built (``optimizer.build(variables)``) first so their slots exist.
    A no-op in a single process.
    """
    if _hvd is None:
        return
    variables = _collect_variables(objects)
    if variables:
        _hvd.broadcast_variables(_backing(variables), root_rank=root)


def _allreduce_array(values, op: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if _hvd is None:
        return array
    from mpi4py import MPI

    out = np.empty_like(array)
    _comm.Allreduce(np.ascontiguousarray(array), out, op=getattr(MPI, op))
    return out


def allreduce_sum(values) -> np.ndarray:
    """Exact float64 sum over ranks of a number or array (eager)."""
    return _allreduce_array(values, "SUM")


def allreduce_max_array(values) -> np.ndarray:
    """Elementwise largest float64 value over ranks of an array (eager); e.g. ℓ∞ errors."""
    return _allreduce_array(values, "MAX")


def allreduce_max(value: float) -> float:
    """Largest ``value`` over ranks; used so all ranks agree on flags such as "stop now"."""
    if _hvd is None:
        return float(value)
    from mpi4py import MPI

    return float(_comm.allreduce(float(value), op=MPI.MAX))



def abort(code: int) -> None:
    """End every rank of the job now (``MPI_Abort``), after an error only this rank saw.

    An exception that unwinds one rank leaves the others waiting in their next collective for
    ever, holding the allocation; aborting makes ``mpirun``/``srun`` end the job instead. In a
    single process this returns and the caller exits as usual.
    """
    if _hvd is None or _comm is None or _comm.Get_size() == 1:
        return
    sys.stderr.flush()
    _comm.Abort(code)
