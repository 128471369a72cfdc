"""Frozen probability tables and the entropy coder of the latents (``constriction``'s ANS).

A model's latent channel c is coded as integers k = round(z_c / step_c) under a fixed table of
integer frequencies over its support low_c..high_c plus one **escape** symbol: a latent outside
the support (bright stars put some far out) is coded as the escape and its value follows the
ANS stream raw (int32). The tables are data — integers made once when the model is frozen
(:func:`tables_from_prior`, :func:`tables_from_latents`) — so encoder and decoder use the very
same probabilities in any process, thread count or machine; nothing here evaluates a float
density at decode time.

A tile's code is ``ANS words (uint32, little-endian) ‖ escaped values (int32, little-endian)``;
the number of escapes is stored beside it (the container's ``NESC`` column). Channels are
coded in order 0..η′−1, each channel's positions in C order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from fitsae.errors import FitsaeError

__all__ = ["PRECISION", "TAIL_MASS", "CodingError", "LatentTables", "tables_from_prior", "tables_from_latents",
           "latent_histograms", "tables_from_histograms", "tables_from_widths", "tables_to_hdu", "tables_from_hdu",
           "encode_latents", "decode_latents", "join_stream", "split_stream"]

PRECISION = 24  # bits of the fixed-point frequencies: constriction's default for its ANS coder
TAIL_MASS = 1e-6  # probability left outside a learned prior's support, given to the escape
MAX_SUPPORT = 4096  # symbols per channel at most; anything further out is escaped
# A model trained without rate never saw rounding: its latents are quantized on a grid this
# fraction of each channel's spread, fine enough that the decoded μ barely moves (the
# quantization noise is (1/16)²/12 ≈ 3·10⁻⁴ of the channel's variance).
UNTRAINED_STEP_FRACTION = 1.0 / 16.0


class CodingError(FitsaeError, ValueError):
    """Coded bytes that cannot be decoded with these tables (corrupt, or another model's)."""


@dataclass(frozen=True)
class LatentTables:
    """Per channel: quantization step, support start and integer frequencies (escape last).

    ``freqs[c]`` has ``high_c − low_c + 2`` entries summing to 2**PRECISION; entry i is the
    frequency of k = low_c + i, the last one the escape's.
    """

    step: np.ndarray  # (C,) float64
    low: np.ndarray  # (C,) int64
    freqs: tuple  # C arrays of int64
    source: str  # "prior" (learned with the model) or "fitted" (to latents at freezing)

    @property
    def channels(self) -> int:
        return len(self.freqs)

    def digest(self) -> str:
        h = hashlib.sha256(self.source.encode())
        h.update(np.ascontiguousarray(self.step, np.float64).tobytes())
        h.update(np.ascontiguousarray(self.low, np.int64).tobytes())
        for f in self.freqs:
            h.update(np.int64(len(f)).tobytes())
            h.update(np.ascontiguousarray(f, np.int64).tobytes())
        return h.hexdigest()

    def symbols(self, z: np.ndarray) -> np.ndarray:
        """Integers k = round(z / step) of latents ``z`` (…, C′) for the first C′ channels."""
        c = z.shape[-1]
        return np.rint(np.asarray(z, np.float64) / self.step[:c]).astype(np.int64)

    def values(self, k: np.ndarray) -> np.ndarray:
        """The latent values the decoder sees for integers ``k`` (…, C′): k · step (float32)."""
        c = k.shape[-1]
        return (np.asarray(k, np.float64) * self.step[:c]).astype(np.float32)

    def ideal_bits(self, k: np.ndarray) -> float:
        """−Σ log₂ P(k) under the tables (escaped values counted at their 32 raw bits too)."""
        total = 0.0
        for c in range(k.shape[-1]):
            index, escaped = self._index(c, k[..., c].reshape(-1))
            p = self.freqs[c][index] / float(1 << PRECISION)
            total += float(-np.log2(p).sum()) + 32.0 * int(escaped.sum())
        return total

    def _index(self, c: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = len(self.freqs[c]) - 1
        index = k - self.low[c]
        escaped = (index < 0) | (index >= size)
        return np.where(escaped, size, index).astype(np.int32), escaped


def tables_to_hdu(tables: LatentTables) -> fits.BinTableHDU:
    """The tables as a FITS binary table, one row per channel (frequencies variable-length)."""
    cols = [
        fits.Column("CHANNEL", "J", array=np.arange(tables.channels, dtype=np.int32)),
        fits.Column("STEP", "D", array=np.asarray(tables.step, np.float64)),
        fits.Column("LOW", "K", array=np.asarray(tables.low, np.int64)),
        fits.Column("FREQS", "PK()", array=np.array([np.asarray(f, np.int64) for f in tables.freqs], dtype=object)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="TABLES")
    hdu.header["SOURCE"] = (tables.source, "prior: learned in training; fitted: at freezing")
    return hdu


def tables_from_hdu(hdu) -> LatentTables:
    data = hdu.data
    return LatentTables(
        step=np.asarray(data["STEP"], np.float64), low=np.asarray(data["LOW"], np.int64),
        freqs=tuple(np.asarray(f, np.int64) for f in data["FREQS"]), source=str(hdu.header["SOURCE"]),
    )


def _quantize_frequencies(p: np.ndarray) -> np.ndarray:
    """Float probabilities (escape last) → positive int64 frequencies summing to 2**PRECISION."""
    p = np.maximum(np.asarray(p, np.float64), 0.0)
    p = p / p.sum()
    total = 1 << PRECISION
    f = np.floor(p * (total - len(p))).astype(np.int64) + 1  # every symbol stays codable
    f[np.argmax(f)] += total - int(f.sum())
    return f


def tables_from_prior(prior, tail: float = TAIL_MASS) -> LatentTables:
    """Freeze a learned :class:`~fitsae.models.prior.FactorizedPrior` (step 1: the model was
    trained on rounded latents) on each channel's central 1 − ``tail`` of probability."""
    q_low, q_high = prior.quantiles(tail)
    low = np.floor(q_low).astype(np.int64)
    high = np.maximum(np.ceil(q_high).astype(np.int64), low)
    centre = (low + high) // 2
    low = np.maximum(low, centre - MAX_SUPPORT // 2)
    high = np.minimum(high, low + MAX_SUPPORT - 1)
    pmfs = prior.cdf_table(low, high)
    freqs = []
    for pmf in pmfs:
        escape = max(1.0 - float(pmf.sum()), tail)
        freqs.append(_quantize_frequencies(np.append(pmf, escape)))
    return LatentTables(np.ones(len(freqs)), low, tuple(freqs), "prior")


def tables_from_latents(latents: np.ndarray, step=None) -> LatentTables:
    """Tables fitted to a sample of a model's latents (N, C), for a model without a usable prior.

    Step per channel: ``step`` when given (a number for every channel, 1 for a model trained for
    rate on the integers, or one per channel), else ``UNTRAINED_STEP_FRACTION`` of its standard
    deviation (of the median absolute deviation when that is smaller, so one far star does not
    coarsen the grid). The histogram of the quantized sample gives the frequencies
    (:func:`tables_from_histograms`).
    """
    z = np.asarray(latents, np.float64).reshape(-1, latents.shape[-1])
    if step is None:
        spread = np.minimum(z.std(axis=0), 1.4826 * np.median(np.abs(z - np.median(z, axis=0)), axis=0))
        spread = np.where(spread > 0, spread, np.maximum(z.std(axis=0), 1e-6))
        step = spread * UNTRAINED_STEP_FRACTION
    step = np.broadcast_to(np.asarray(step, np.float64), (z.shape[1],)).copy()
    return tables_from_histograms(step, latent_histograms(np.rint(z / step).astype(np.int64)))


# Latent integers further than this from 0 are not histogrammed one by one, only counted (they
# are escaped in any table: MAX_SUPPORT is far smaller), so a far outlier cannot blow up memory.
HISTOGRAM_HALF_WIDTH = 1 << 15


def latent_histograms(k: np.ndarray) -> np.ndarray:
    """Counts of the integers ``k`` (N, C) per channel, (C, 2·HISTOGRAM_HALF_WIDTH + 2): entry i
    counts k = i − HISTOGRAM_HALF_WIDTH, the last entry everything beyond ±HISTOGRAM_HALF_WIDTH.

    A fixed layout, so histograms of several ranks' latents add up to the histogram of all of them
    (the evaluation fits tables identically on any number of ranks).
    """
    k = np.asarray(k, np.int64).reshape(-1, k.shape[-1])
    width = 2 * HISTOGRAM_HALF_WIDTH + 1
    out = np.zeros((k.shape[1], width + 1), np.int64)
    for c in range(k.shape[1]):
        index = k[:, c] + HISTOGRAM_HALF_WIDTH
        inside = (index >= 0) & (index < width)
        out[c, :width] = np.bincount(index[inside], minlength=width)
        out[c, width] = int((~inside).sum())
    return out


def tables_from_histograms(step: np.ndarray, histograms: np.ndarray) -> LatentTables:
    """Tables from per-channel counts (:func:`latent_histograms`) of latents quantized with ``step`` (C,).

    Each channel's support is the central 1 − 2·10⁻⁴ of its counts (at most MAX_SUPPORT symbols);
    every symbol in it gets one count more (it stays codable), and what falls outside — plus one —
    is the escape's.
    """
    hist = np.asarray(histograms, np.int64)
    lows, freqs = [], []
    for counts in hist:
        inner, beyond = counts[:-1], int(counts[-1])
        total = int(inner.sum()) + beyond
        cdf = np.cumsum(inner)
        if cdf[-1] == 0:  # nothing near 0 at all: a one-symbol table, everything escaped
            lo = hi = HISTOGRAM_HALF_WIDTH
        else:
            lo = int(np.searchsorted(cdf, 1e-4 * total, side="right"))
            hi = max(lo, int(np.searchsorted(cdf, (1.0 - 1e-4) * total, side="left")))
            hi = min(hi, len(inner) - 1)
        centre = (lo + hi) // 2
        lo = max(lo, centre - MAX_SUPPORT // 2)
        hi = min(hi, lo + MAX_SUPPORT - 1)
        inside = inner[lo:hi + 1].astype(np.float64)
        escape = float(total - inside.sum()) + 1.0
        lows.append(lo - HISTOGRAM_HALF_WIDTH)
        freqs.append(_quantize_frequencies(np.append(inside + 1.0, escape)))
    return LatentTables(np.asarray(step, np.float64), np.array(lows, np.int64), tuple(freqs), "fitted")


def _laplace_cdf(v: np.ndarray, b: float) -> np.ndarray:
    return np.where(v < 0, 0.5 * np.exp(np.minimum(v, 0) / b), 1 - 0.5 * np.exp(-np.maximum(v, 0) / b))


def tables_from_widths(widths: np.ndarray, step: float) -> LatentTables:
    """Tables of discretized Laplace densities (zero mean, standard deviations ``widths``) on a
    grid of ``step``: for coefficients whose spread is known but never learned (PCA's, whose
    variances are its eigenvalues). Laplace rather than Gaussian: sky coefficients have heavy tails."""
    widths = np.maximum(np.asarray(widths, np.float64), 1e-9)
    lows, freqs = [], []
    for width in widths:
        b = width / np.sqrt(2.0) / step  # Laplace scale in steps
        half = int(min(MAX_SUPPORT // 2 - 1, np.ceil(b * np.log(1.0 / TAIL_MASS)) + 1))
        k = np.arange(-half, half + 1, dtype=np.float64)
        pmf = _laplace_cdf(k + 0.5, b) - _laplace_cdf(k - 0.5, b)
        lows.append(-half)
        freqs.append(_quantize_frequencies(np.append(pmf, max(1.0 - pmf.sum(), TAIL_MASS))))
    return LatentTables(np.full(len(widths), float(step)), np.array(lows, np.int64), tuple(freqs), "laplace")


def join_stream(coder, escaped: np.ndarray, escape_dtype: str) -> bytes:
    """A coded block: the ANS ``coder``'s words (uint32 LE) ‖ the ``escaped`` values (``escape_dtype``).

    The latents' and the error-bounded residuals' blocks share this layout (int32 and int64
    escapes); the escape count is stored beside the block, not in it.
    """
    words = np.asarray(coder.get_compressed(), dtype="<u4")
    return words.tobytes() + np.asarray(escaped).astype(escape_dtype).tobytes()


def split_stream(data: bytes, escapes: int, escape_dtype: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`join_stream`: (uint32 ANS words, int64 escaped values).

    :class:`CodingError` when ``data`` cannot hold ``escapes`` escaped values (named ``what`` in
    the message) and whole words.
    """
    size, n_esc = np.dtype(escape_dtype).itemsize, int(escapes)
    if n_esc < 0 or size * n_esc > len(data) or (len(data) - size * n_esc) % 4:
        raise CodingError(f"{len(data)} coded bytes cannot hold {n_esc} {what} and whole ANS words")
    split = len(data) - size * n_esc
    return (np.frombuffer(data[:split], dtype="<u4").astype(np.uint32),
            np.frombuffer(data[split:], dtype=escape_dtype).astype(np.int64))


def _categorical(freqs: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(freqs / float(1 << PRECISION), perfect=False)


def encode_latents(tables: LatentTables, k: np.ndarray) -> tuple[bytes, int]:
    """Code integers ``k`` (positions…, C′) channel by channel; returns (bytes, escapes)."""
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    flat = k.reshape(-1, k.shape[-1])
    escaped_values = []
    indices = []
    for c in range(flat.shape[1]):
        index, escaped = tables._index(c, flat[:, c])
        indices.append(index)
        escaped_values.append(flat[escaped, c])
    for c in reversed(range(flat.shape[1])):  # a stack: encode last what is decoded first
        coder.encode_reverse(indices[c], _categorical(tables.freqs[c]))
    escapes = np.concatenate(escaped_values) if escaped_values else np.zeros(0, np.int64)
    if np.any(np.abs(escapes) >= 2 ** 31):
        raise CodingError(f"a latent integer {int(np.abs(escapes).max())} does not fit the escape's 32 bits")
    return join_stream(coder, escapes, "<i4"), int(len(escapes))


def decode_latents(tables: LatentTables, data: bytes, escapes: int, shape: tuple) -> np.ndarray:
    """Inverse of :func:`encode_latents`: integers of ``shape`` (positions…, C′)."""
    import constriction

    n_esc = int(escapes)
    words, escaped_values = split_stream(data, n_esc, "<i4", "escaped values")
    channels = shape[-1]
    if channels > tables.channels:
        raise CodingError(f"{channels} channels coded, the tables have {tables.channels}")
    n = int(np.prod(shape[:-1]))
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = np.empty((n, channels), np.int64)
        used = 0
        for c in range(channels):
            index = np.asarray(coder.decode(_categorical(tables.freqs[c]), n), np.int64)
            size = len(tables.freqs[c]) - 1
            escaped = index == size
            values = index + tables.low[c]
            count = int(escaped.sum())
            if used + count > n_esc:
                raise CodingError("more escapes decoded than stored")
            values[escaped] = escaped_values[used:used + count]
            used += count
            out[:, c] = values
        leftover = not coder.is_empty()
    except CodingError:
        raise
    except Exception as err:  # constriction reports a bad stream as ValueError/AssertionError
        raise CodingError(f"the ANS stream does not decode: {err}") from err
    if used != n_esc or leftover:
        raise CodingError("the coded bytes do not decode to exactly the stored latents "
                          f"({used} of {n_esc} escapes used, {'data left over' if leftover else 'stream ended'})")
    return out.reshape(shape)
