"""Keep TensorFlow's start-up chatter off the user's terminal (``--verbose`` brings it back).

Contract: TensorFlow's own C++ log obeys ``TF_CPP_MIN_LOG_LEVEL``, set before it is imported;
the lines of XLA's statically linked absl (``All log messages before absl::InitializeLog()``,
``I0000 … XLA service … initialized``) obey no variable, so stderr (fd 2, which C++ writes to
directly) is passed through a small forked filter process that drops exactly those absl INFO
lines and copies everything else unchanged.

Why a process, not a thread: it outlives a crash of the main process, so a fatal message
written just before it is never lost. (Which variables were tried: docs/measurements.md.)
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal

__all__ = ["quiet_tensorflow", "NOISE"]

# absl's pre-InitializeLog banner and its INFO lines: "I" + MMDD, time (before absl knows the
# time zone: "00:00:<seconds since 1970>.<µs>"), thread id, file:line]. Warnings and errors
# (W…, E…, F…) are kept.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] .*)\r?\n?$"
)

# Signals that reach a whole process group (Ctrl-C, SLURM's --signal, scancel): the filter ignores
# them and keeps copying until the main process closes its end, so the main process can still
# print how it stopped.
_IGNORED = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT")


def quiet_tensorflow() -> None:
    """Silence TensorFlow's and XLA's INFO/WARNING lines for this process and its children.

    Must run before TensorFlow is imported. Values already in the environment win, so
    ``TF_CPP_MIN_LOG_LEVEL=0 fitsae …`` still shows everything from TensorFlow's own logger.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Python-side TensorFlow/absl warnings (deprecations) go through these loggers.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _filter_stderr()


def _filter_stderr() -> None:
    try:
        read_end, write_end = os.pipe()
        original = os.dup(2)
    except OSError:
        return  # no usable stderr: nothing to keep quiet
    pid = os.fork()
    if pid == 0:
        _run_filter(read_end, write_end, original)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:
        # Closing our end lets the filter see end-of-file; waiting for it means its last lines
        # are out before the shell prints its prompt.
        try:
            os.dup2(original, 2)
            os.waitpid(pid, 0)
        except OSError:
            pass

    atexit.register(restore)


def _run_filter(read_end: int, write_end: int, original: int) -> None:
    """The forked child: copy ``read_end`` to the original stderr, minus :data:`NOISE` lines."""
    try:
        for name in _IGNORED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        os.close(write_end)
        # Hold no descriptor of the parent's but these two: a caller reading the parent's stdout
        # until end-of-file must not wait for the filter.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = {read_end, original}
        for fd in range(3, max(keep)):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.closerange(max(keep) + 1, os.sysconf("SC_OPEN_MAX"))
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while True:
                chunk = source.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
                if out:
                    os.write(original, out)
            if pending and not NOISE.match(pending):
                os.write(original, pending)
    finally:
        os._exit(0)
