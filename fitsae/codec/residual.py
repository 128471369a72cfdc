"""Per-pixel coding of quantized integers under the model's prediction (``constriction``'s ANS).

Each pixel's integer k is coded under a discretized density whose mean and width are the
model's μ and σ placed on the k-grid (:meth:`fitsae.codec.quantize.TileFrame.to_grid`). Both
are quantized first, so encoder and decoder evaluate the very same probabilities:

- the mean to an integer centre c = round(μ_k) and a fraction of it on a grid of 1/``MEAN_GRID``;
- the width σ/Δ to the nearest entry of a fixed log-spaced table (``WIDTHS``: 2^(i/3)/16),
  optionally moved up the table by a whole number of entries (:meth:`Prediction.widened`, one
  setting per tile: where the model's σ is too narrow), integer arithmetic on the index.

The residual r = k − c is coded; |r| > ``SUPPORT`` (a star the model missed) is coded as the
support's end ±(SUPPORT + 1), an escape, and r follows raw (int64). A tile's code is
``ANS words (uint32 LE) ‖ escaped residuals (int64 LE)``; the escape count is stored beside it.
The family is a discretized ``laplace`` or ``gaussian`` (:data:`FAMILIES`); the error-bounded
modes pick one per tile (:mod:`fitsae.codec.bounded`).
"""

from __future__ import annotations

import numpy as np

from fitsae.entropy import CodingError, join_stream, split_stream

__all__ = ["FAMILIES", "DEFAULT_FAMILY", "WIDTHS", "SUPPORT", "Prediction", "predict", "symbols", "model", "params",
           "encode", "decode"]

FAMILIES = ("laplace", "gaussian")
DEFAULT_FAMILY = "laplace"
MEAN_GRID = 16
WIDTHS = 2.0 ** (np.arange(3 * 18, dtype=np.float64) / 3.0 - 4.0)  # σ/Δ from 1/16 to ~6·10³
SUPPORT = 1 << 14


class Prediction:
    """Quantized per-pixel parameters (flattened in C order): centre, mean offset, width (and its
    index in ``WIDTHS``)."""

    def __init__(self, centre: np.ndarray, offset: np.ndarray, index: np.ndarray):
        self.centre, self.offset, self.index = centre, offset, index
        self.width = WIDTHS[index]

    def widened(self, steps: int) -> "Prediction":
        """The same prediction with every width ``steps`` table entries wider (×2^(steps/3))."""
        return Prediction(self.centre, self.offset, np.clip(self.index + int(steps), 0, len(WIDTHS) - 1))


def predict(mu_grid: np.ndarray, sigma_grid: np.ndarray) -> Prediction:
    """Quantize μ and σ already expressed in steps of the k-grid (any shape) into a :class:`Prediction`."""
    mu = np.asarray(mu_grid, np.float64).reshape(-1)
    sigma = np.asarray(sigma_grid, np.float64).reshape(-1)
    mu = np.where(np.isfinite(mu), np.clip(mu, -2.0 ** 62, 2.0 ** 62), 0.0)
    centre = np.floor(mu + 0.5)
    offset = np.floor((mu - centre) * MEAN_GRID + 0.5) / MEAN_GRID
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.floor(np.log2(np.where(sigma > 0, sigma, WIDTHS[0])) * 3.0 + 12.0 + 0.5)
    index = np.clip(np.nan_to_num(index, nan=0.0), 0, len(WIDTHS) - 1).astype(np.int64)
    return Prediction(centre.astype(np.int64), offset, index)


def model(family: str):
    """constriction's quantized ``family`` over the residual alphabet (escape symbols at its ends)."""
    import constriction

    families = {"laplace": constriction.stream.model.QuantizedLaplace,
                "gaussian": constriction.stream.model.QuantizedGaussian}
    if family not in families:
        raise CodingError(f"residual family {family!r}: expected one of {', '.join(FAMILIES)}")
    return families[family](-SUPPORT - 1, SUPPORT + 1)


def params(family: str, prediction: Prediction) -> tuple:
    """The per-symbol (mean, scale) arrays constriction's ``family`` takes for ``prediction``."""
    width = prediction.width if family == "gaussian" else prediction.width / np.sqrt(2.0)  # Laplace b: σ/√2
    return prediction.offset, width


def symbols(k: np.ndarray, prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
    """(int32 symbols, escaped residuals int64) of integers ``k`` (flat) around ``prediction``'s centres."""
    r = np.asarray(k, np.int64).reshape(-1) - prediction.centre
    escaped = np.abs(r) > SUPPORT
    return np.where(escaped, np.sign(r) * (SUPPORT + 1), r).astype(np.int32), r[escaped]


def encode(k: np.ndarray, prediction: Prediction, family: str = DEFAULT_FAMILY) -> tuple[bytes, int]:
    """Integers ``k`` (any shape, C order) under ``prediction`` → (coded bytes, escapes)."""
    import constriction

    coded, raw = symbols(k, prediction)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(coded, model(family), *params(family, prediction))
    return join_stream(coder, raw, "<i8"), int(raw.size)


def decode(data: bytes, escapes: int, prediction: Prediction, family: str = DEFAULT_FAMILY) -> np.ndarray:
    """Inverse of :func:`encode`: flat int64 integers k; :class:`CodingError` if the bytes do not fit."""
    import constriction

    n_esc = int(escapes)
    words, raw = split_stream(data, n_esc, "<i8", "escaped residuals")
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        decoded = np.asarray(coder.decode(model(family), *params(family, prediction)), np.int64)
        leftover = not coder.is_empty()
    except Exception as err:  # constriction reports a bad stream as ValueError/AssertionError
        raise CodingError(f"the residual stream does not decode: {err}") from err
    escaped = np.abs(decoded) == SUPPORT + 1
    if int(escaped.sum()) != n_esc or leftover:
        raise CodingError(f"the residual bytes do not decode to the stored pixels ({int(escaped.sum())} escapes "
                          f"decoded, {n_esc} stored{', data left over' if leftover else ''})")
    r = decoded.copy()
    r[escaped] = raw
    return r + prediction.centre
