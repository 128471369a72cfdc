"""``fitsae doctor``: print the stack fitsae runs on and say what is wrong with it.

The usual ways a Horovod install goes wrong are silent until the first multi-rank job: a wheel
built without MPI, or built against another TensorFlow (its C++ ops then fail to load). Doctor
checks both, so a user learns it on the login node, not after a queue wait.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import shutil
import socket
import subprocess
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitsae doctor",
        description="Print versions of Python, TensorFlow, Keras, Horovod (with its build flags), MPI, "
        "mpi4py and astropy, and the ranks this job sees. Exits 1 with advice when Horovod is missing, "
        "lacks MPI, or was built against another TensorFlow. Run it alone, or under mpirun/srun to "
        "check that every rank starts.",
    )
    parser.add_argument("--no-horovod-ok", action="store_true",
                        help="report a missing Horovod without failing (single-machine installs)")
    return parser


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


REBUILD = (
    "rebuild it against the installed TensorFlow with MPI: "
    "HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 "
    "pip install --no-cache-dir --force-reinstall --no-deps --no-build-isolation horovod==0.28.1 "
    "(or rerun scripts/setup.sh)"
)


def _mpi_library_version() -> str:
    try:
        import mpi4py

        if "mpi4py.MPI" not in sys.modules:
            # Reading the library version is allowed before MPI_Init; do not start MPI for it.
            mpi4py.rc.initialize = False
        from mpi4py import MPI

        return MPI.Get_library_version().strip().splitlines()[0]
    except Exception as err:  # doctor reports, it does not crash
        return f"unavailable ({err})"


def _mpirun_version() -> str:
    exe = shutil.which("mpirun")
    if not exe:
        return "mpirun not on PATH"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
        return f"{out.strip().splitlines()[0]} ({exe})"
    except (OSError, subprocess.SubprocessError, IndexError) as err:
        return f"{exe} ({err})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fitsae import __version__
    from fitsae import distributed

    problems: list[str] = []
    try:
        w = distributed.init_workers()
    except distributed.DistributedError as err:
        print(f"fitsae doctor: {err}", file=sys.stderr)
        return 1
    rows = [
        ("fitsae", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
    ]
    import tensorflow as tf

    rows += [
        ("tensorflow", f"{tf.__version__} (GPUs: {len(tf.config.list_physical_devices('GPU'))})"),
        ("keras", _version("keras")),
        ("numpy", _version("numpy")),
        ("astropy", _version("astropy")),
        ("mpi4py", _version("mpi4py")),
    ]
    hvd_version = _version("horovod")
    if hvd_version == "not installed":
        rows.append(("horovod", "not installed"))
        if not args.no_horovod_ok:
            problems.append("Horovod is not installed: " + REBUILD)
    else:
        try:
            import horovod.tensorflow as hvd

            flags = f"mpi_built={hvd.mpi_built()} gloo_built={hvd.gloo_built()} nccl_built={hvd.nccl_built()}"
            enabled = f" mpi_enabled={hvd.mpi_enabled()}" if w.backend == "horovod" else " mpi_enabled=n/a (not launched by MPI)"
            rows.append(("horovod", f"{hvd_version} {flags}{enabled}"))
            if not hvd.mpi_built():
                problems.append("Horovod was built without MPI: " + REBUILD)
            if w.backend == "horovod" and not hvd.mpi_enabled():
                problems.append("Horovod is not using MPI in this job (HOROVOD_CONTROLLER=gloo set?)")
        except Exception as err:  # a failing C++ op library surfaces as many exception types
            rows.append(("horovod", f"{hvd_version}, but it fails to load: {err}"))
            problems.append(
                f"Horovod {hvd_version} does not load against TensorFlow {tf.__version__} "
                f"(built against another TensorFlow?): " + REBUILD
            )
    rows += [
        ("MPI library", _mpi_library_version() if w.backend == "horovod" or _version("mpi4py") != "not installed" else "n/a"),
        ("MPI launcher", _mpirun_version()),
    ]
    hosts = distributed.comm().allgather(socket.gethostname())
    rows.append(("ranks", f"{w.size} (backend {w.backend}; hosts: {', '.join(sorted(set(hosts)))})"))
    launch = distributed.launcher_environment()
    if launch:
        rows.append(("launcher env", " ".join(f"{k}={v}" for k, v in sorted(launch.items()))))
    if w.is_root:
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("doctor: OK" if not problems else f"doctor: {len(problems)} problem(s)", flush=True)
    return 1 if problems else 0
