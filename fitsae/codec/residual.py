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
``ANS words (uint32 LE) ‖ escaped residuals (int64 LE)``, its pixels in one or several passes
(:func:`encode_passes`, read back by :class:`PassReader`: :mod:`fitsae.codec.context`), the
escapes in pass order; the escape count is stored beside it.
The family is a discretized ``laplace`` or ``gaussian`` (:data:`FAMILIES`); the error-bounded
modes pick one per tile (:mod:`fitsae.codec.bounded`).
"""

from __future__ import annotations

import numpy as np

from fitsae.entropy import CodingError, join_stream, split_stream

__all__ = ["FAMILIES", "DEFAULT_FAMILY", "WIDTHS", "SUPPORT", "Prediction", "predict", "encode_passes", "encode",
           "PassReader", "decode"]

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


def _model(family: str):
    import constriction

    families = {"laplace": constriction.stream.model.QuantizedLaplace,
                "gaussian": constriction.stream.model.QuantizedGaussian}
    if family not in families:
        raise CodingError(f"residual family {family!r}: expected one of {', '.join(FAMILIES)}")
    return families[family](-SUPPORT - 1, SUPPORT + 1)


def _params(family: str, prediction: Prediction) -> tuple:
    width = prediction.width if family == "gaussian" else prediction.width / np.sqrt(2.0)  # Laplace b: σ/√2
    return prediction.offset, width


def _symbols(k: np.ndarray, prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(k, np.int64).reshape(-1) - prediction.centre
    escaped = np.abs(r) > SUPPORT
    return np.where(escaped, np.sign(r) * (SUPPORT + 1), r).astype(np.int32), r[escaped]


def encode_passes(passes: list, family: str = DEFAULT_FAMILY) -> tuple[bytes, int]:
    """Several passes of integers, each ``(k, prediction)``, in one stream that :class:`PassReader`
    reads back in the same order → (coded bytes, escapes)."""
    import constriction

    coded = [_symbols(k, prediction) for k, prediction in passes]
    coder, model = constriction.stream.stack.AnsCoder(), _model(family)
    for (symbols, _), (_, prediction) in zip(reversed(coded), reversed(passes), strict=True):
        coder.encode_reverse(symbols, model, *_params(family, prediction))
    raw = np.concatenate([escaped for _, escaped in coded]) if coded else np.zeros(0, np.int64)
    return join_stream(coder, raw, "<i8"), int(raw.size)


def encode(k: np.ndarray, prediction: Prediction, family: str = DEFAULT_FAMILY) -> tuple[bytes, int]:
    """Integers ``k`` (any shape, C order) under ``prediction`` → (coded bytes, escapes): one pass."""
    return encode_passes([(k, prediction)], family)


class PassReader:
    """Reads a stream of :func:`encode_passes` back one pass at a time, so that a pass's prediction
    may depend on the integers already read; :class:`CodingError` when the bytes do not fit."""

    def __init__(self, data: bytes, escapes: int, family: str = DEFAULT_FAMILY):
        import constriction

        words, self._raw = split_stream(data, int(escapes), "<i8", "escaped residuals")
        self._model, self._family, self._used = _model(family), family, 0
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except Exception as err:  # constriction reports a bad stream as ValueError/AssertionError
            raise CodingError(f"the residual stream does not decode: {err}") from err

    def read(self, prediction: Prediction) -> np.ndarray:
        """The next pass: flat int64 integers, one per entry of ``prediction``."""
        try:
            r = np.asarray(self._coder.decode(self._model, *_params(self._family, prediction)), np.int64)
        except Exception as err:
            raise CodingError(f"the residual stream does not decode: {err}") from err
        escaped = np.abs(r) == SUPPORT + 1
        n = int(escaped.sum())
        if self._used + n > self._raw.size:
            raise CodingError(f"the residual bytes decode to more escapes than the {self._raw.size} stored")
        r[escaped] = self._raw[self._used:self._used + n]
        self._used += n
        return r + prediction.centre

    def finish(self) -> None:
        """Every word and escape read, or :class:`CodingError`."""
        leftover = not self._coder.is_empty()
        if self._used != self._raw.size or leftover:
            raise CodingError(f"the residual bytes do not decode to the stored pixels ({self._used} escapes "
                              f"decoded, {self._raw.size} stored{', data left over' if leftover else ''})")


def decode(data: bytes, escapes: int, prediction: Prediction, family: str = DEFAULT_FAMILY) -> np.ndarray:
    """Inverse of :func:`encode`: flat int64 integers k; :class:`CodingError` if the bytes do not fit."""
    reader = PassReader(data, escapes, family)
    k = reader.read(prediction)
    reader.finish()
    return k
