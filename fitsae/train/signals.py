"""Graceful stop on SIGTERM/SIGUSR1, and the exit codes ``fitsae train`` returns.

SLURM (preemption, time limit with ``--signal``) and ``scancel`` send SIGTERM or SIGUSR1 to every
task, but not at the same instant, and a rank that stops alone would leave the others blocked in
an allreduce. So a handler only sets a flag; the loop allreduces the flag (max over ranks) after
every step, every rank stops after the same step, rank 0 checkpoints, and the process exits with
:data:`EXIT_REQUEUE` so a wrapper script (or ``sbatch --requeue``) knows to resubmit.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_DIVERGED", "EXIT_REQUEUE", "StopSignals"]

EXIT_OK = 0
EXIT_USAGE = 2
# Non-finite loss: the run stopped without writing the bad state; lower the learning rate or
# inspect the data before resuming from the last good checkpoint.
EXIT_DIVERGED = 3
# EX_TEMPFAIL from sysexits.h: "temporary failure, try again" -- stopped by a signal after
# checkpointing; please requeue (rerunning the same command resumes exactly).
EXIT_REQUEUE = 75

_SIGNALS = ("SIGTERM", "SIGUSR1")


class StopSignals:
    """Context manager that turns SIGTERM/SIGUSR1 into a flag instead of killing the process.

    Previous handlers are restored on exit. Outside the main thread (where Python cannot install
    handlers) it installs nothing and the flag simply never rises.
    """

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
