"""Progress lines with an estimated time left, for loops that run for minutes.

Plain log lines, not a redrawn bar: the same output reads well in a terminal and in a SLURM log
file, where a bar's carriage returns turn into thousands of lines. Lines go to the ``fitsae``
logger, which prints INFO on rank 0 only, so a job with N ranks prints each line once.

``FITSAE_PROGRESS_SECONDS`` sets the time between lines (default 10; 0 prints every update).
"""

from __future__ import annotations

import logging
import os
import time

__all__ = ["Progress", "format_duration", "eta_seconds"]

log = logging.getLogger("fitsae")

DEFAULT_INTERVAL = 10.0


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a log line, exact enough for waiting."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Time left if the rest goes at the average rate so far; None before there is a rate."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


def _interval() -> float:
    text = os.environ.get("FITSAE_PROGRESS_SECONDS", "")
    try:
        return max(0.0, float(text)) if text else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


class Progress:
    """Counts units of work (tiles, steps) and logs ``what: done/total (p%), elapsed, ETA`` lines.

    A line is written at most every ``FITSAE_PROGRESS_SECONDS``; :meth:`finish` writes a closing
    line only when at least one progress line was written, so quick phases stay silent.

    Parameters
    ----------
    what : str
        What is being counted, e.g. ``"scoring step 2000"``.
    total : int or None
        Units expected (None: unknown, lines then carry no percentage or ETA).
    unit : str
        Name of one unit in the lines (``"tiles"``).
    """

    def __init__(self, what: str, total: int | None, unit: str = "tiles"):
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.interval = _interval()
        self._start = time.monotonic()
        self._last = self._start
        self._printed = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._printed = True
            log.info("%s", self.line(now - self._start))

    def line(self, elapsed: float) -> str:
        """The progress line after ``elapsed`` seconds."""
        if not self.total:
            return f"{self.what}: {self.done} {self.unit}, {format_duration(elapsed)}"
        eta = eta_seconds(self.done, self.total, elapsed)
        left = "" if eta is None or self.done >= self.total else f", ETA {format_duration(eta)}"
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), "
                f"{format_duration(elapsed)}{left}")

    def finish(self) -> None:
        if self._printed:
            log.info("%s: %d %s in %s", self.what, self.done, self.unit,
                     format_duration(time.monotonic() - self._start))
