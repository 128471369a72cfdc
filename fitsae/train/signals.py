"""Graceful stop on SIGTERM/SIGUSR1/SIGINT, and the exit codes ``fitsae train`` returns.

Contract: a signal only sets a flag (:class:`StopSignals`); the loop allreduces the flag (max
over ranks) after every step, so every rank stops after the same step, rank 0 checkpoints and
the process exits with :data:`EXIT_REQUEUE` (rerunning the same command resumes exactly). A
second Ctrl-C exits at once with :data:`EXIT_INTERRUPTED`, keeping the checkpoints written.

Why: SLURM and ``scancel`` signal the tasks at different instants, and a rank that stopped alone
would leave the others blocked in an allreduce; Ctrl-C as a ``KeyboardInterrupt`` unwinds
through TensorFlow's and Horovod's threads mid-step (docs/history.md, "Stopping a run").
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_DIVERGED", "EXIT_REQUEUE", "EXIT_INTERRUPTED", "StopSignals"]

EXIT_OK = 0
EXIT_USAGE = 2
# Non-finite loss: the run stopped without writing the bad state; lower the learning rate or
# inspect the data before resuming from the last good checkpoint.
EXIT_DIVERGED = 3
# EX_TEMPFAIL from sysexits.h: "temporary failure, try again" -- stopped by a signal after
# checkpointing; please requeue (rerunning the same command resumes exactly).
EXIT_REQUEUE = 75
# 128 + SIGINT, what a shell reports for a process killed by Ctrl-C: a second Ctrl-C aborts.
EXIT_INTERRUPTED = 130

_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopSignals:
    """Context manager that turns SIGTERM/SIGUSR1/SIGINT into a flag instead of killing the process.

    The first signal sets :attr:`received` and writes one line to stderr saying what happens next;
    a second SIGINT exits the process at once (:data:`EXIT_INTERRUPTED`). Previous handlers are
    restored on exit. Outside the main thread (where Python cannot install handlers) it installs
    nothing and the flag simply never rises. A SIGINT the process inherited ignored stays ignored
    (the shell's promise to a background job, ``cmd &`` or ``nohup``, that Ctrl-C at the terminal
    does not reach it); SIGTERM and SIGUSR1 still stop it.
    """

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            # os.write and os._exit are safe here; print() may be mid-write in the main thread.
            os.write(2, b"fitsae train: second Ctrl-C, exiting now without a new checkpoint "
                        b"(rerun the same command to resume from the last one)\n")
            os._exit(EXIT_INTERRUPTED)
        if self.received is None:
            self.received = name
            again = " (Ctrl-C again to quit without saving)" if name == "SIGINT" else ""
            # Open MPI's ranks never see Ctrl-C: mpirun answers SIGINT (and SIGTERM) with SIGTERM
            # to every rank and SIGKILL a second later (odls_base_sigkill_timeout), while it
            # forwards SIGUSR1 without a deadline.
            if name == "SIGTERM" and "OMPI_COMM_WORLD_SIZE" in os.environ:
                again = ("; if mpirun sent it (Ctrl-C), it kills the ranks a second later: "
                         "to stop keeping all progress, send SIGUSR1 to mpirun instead")
            os.write(2, f"fitsae train: {name} received, stopping after this step and checkpointing"
                        f"{again}\n".encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNALS:
                sig = getattr(signal, name, None)
                if sig is None or (name == "SIGINT" and signal.getsignal(sig) == signal.SIG_IGN):
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
