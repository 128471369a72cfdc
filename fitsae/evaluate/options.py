"""What ``fitsae evaluate`` was asked to do: its options, its error type, and the η to score.

Contract: everything here is plain Python (no TensorFlow, no data); the η list is checked for
syntax when parsed and against the model's channels once the model is known, because with
``--watch`` the run may not exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitsae.budget import EXHAUSTIVE_UP_TO, ladder
from fitsae.errors import FitsaeError

__all__ = ["EvalOptions", "EvaluationError", "default_etas", "parse_etas", "resolve_etas"]

# Dense models are cheap per η (one small matmul each), so "every η" is the default while the
# budget tries every η′ anyway (fitsae.budget); beyond, a log-spaced spread keeps an evaluation
# to minutes.
_ALL_ETAS_UP_TO = EXHAUSTIVE_UP_TO
_SPREAD = 16


class EvaluationError(FitsaeError, RuntimeError):
    """Evaluation cannot proceed (bad run dir, checkpoint, data or option); the message says why."""


@dataclass
class EvalOptions:
    """What ``fitsae evaluate`` was asked to do (see ``fitsae evaluate --help``)."""

    run_dir: Path
    data: list[str]
    out: Path | None = None
    etas: list[int] | str | None = None  # a list, "all", or None for the default spread
    checkpoint: str = "latest"
    watch: bool = False
    poll_seconds: float = 30.0
    watch_timeout: float = 3600.0
    batch_size: int | None = None
    max_tiles: int | None = None
    pca_data: list[str] | None = None
    pca_tiles: int = 2000
    fpack_tiles: int = 64
    fpack: bool = True
    tensorboard: bool = True
    plots: bool = True
    example_size: int = 128
    logbetas: list[float] | None = None  # β-VAE runs: the log10 β grid (default: spread over training range)
    compare: Path | None = None  # β-VAE runs: a tunable AE's report.json to draw on the same RD axes
    bounded_levels: tuple = ()  # quantize levels of the error-bounded modes to score (fitsae.evaluate.bounded)
    refine: int = 0  # encoder-side refinement steps per tile, as `fitsae compress --refine` (fitsae.codec.refine)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "eval"


def default_etas(fixed_size: bool, channels: int) -> list[int]:
    """Every η for a small latent vector (a fixed-size, dense model: cheap per η); otherwise a
    log-spaced spread over 1..C that includes C.

    The spread is taken from the budget's ladder (:func:`fitsae.budget.ladder`), so that every
    scored budget is a candidate of the next and the AE error cannot rise between them.
    """
    if fixed_size and channels <= _ALL_ETAS_UP_TO:
        return list(range(1, channels + 1))
    steps = ladder(channels)
    if len(steps) == channels:  # every η′ is on the ladder
        spread = np.unique(np.round(np.geomspace(1, channels, min(_SPREAD, channels))).astype(int))
        return [int(e) for e in spread]
    stride = max(1, round(len(steps) / _SPREAD))
    spread = steps[::stride]
    return spread if spread[-1] == channels else spread + [channels]


def parse_etas(text: str | None) -> list[int] | str | None:
    """``"1,2,8"`` or ``"1-4,8"`` → sorted η list; ``"all"`` → ``"all"``; empty → None (default).

    Only the syntax is checked here: the range 1..C is checked against the model once it is
    loaded (with ``--watch`` the run may not even exist yet).
    """
    if text is None or text.strip() == "":
        return None
    if text.strip() == "all":
        return "all"
    etas = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(part)]
        except ValueError:
            raise EvaluationError(f"--etas {text!r}: {part!r} is not an integer or range a-b") from None
        etas.update(values)
    if not etas:
        raise EvaluationError(f"--etas {text!r}: no η values")
    return sorted(etas)


def resolve_etas(requested: list[int] | str | None, fixed_size: bool, channels: int) -> list[int]:
    """The η to evaluate for a model with ``channels`` latent channels (see :func:`parse_etas`)."""
    if requested is None:
        return default_etas(fixed_size, channels)
    if requested == "all":
        return list(range(1, channels + 1))
    bad = [e for e in requested if not 1 <= e <= channels]
    if bad:
        raise EvaluationError(f"--etas {bad} outside 1..{channels} (the model's latent channels)")
    return list(requested)
