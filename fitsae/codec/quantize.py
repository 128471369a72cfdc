"""fpack's quantization: a step Δ per tile, subtractive dithering from a seeded sequence.

Contract: a pixel x becomes k = round((x − zero)/Δ + u) and decodes to x̂ = zero + (k − u)·Δ,
so |x − x̂| ≤ Δ/2 and, u being uniform on [−½, ½) and independent of x, the error has zero
mean. u comes from a counter-based integer hash of (seed, plane, tile origin, pixel index)
(:func:`dither`), so any machine and numpy version draws the same u; the seed plays fpack's
ZDITHER0. :class:`Quantization` chooses Δ per mode (``quantize``, ``max-error``, ``lossless``).

Why fpack's scheme: it is what astronomers trust for lossy FITS, and it bounds every pixel's
error, which a learned codec alone does not.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from fitsae.codec.errors import CodecError

__all__ = ["MODES", "Quantization", "TileFrame", "dither", "default_seed"]

MODES = ("quantize", "max-error", "lossless")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def default_seed() -> int:
    """A seed in 1..10000 from the clock, like fpack's default ZDITHER0 (different per file)."""
    return int(time.time_ns() // 1000) % 10000 + 1


def _mix(v: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective scramble of uint64 counters."""
    with np.errstate(over="ignore"):
        v = (v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        v = (v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return v ^ (v >> np.uint64(31))


def dither(seed: int, plane: int, y0: int, x0: int, shape: tuple) -> np.ndarray:
    """The dither u ∈ [−½, ½) of a tile's pixels (float64, ``shape``), fixed by its arguments."""
    key = (int(seed) * 1_000_003 + int(plane)) * 1_000_033 + int(y0) * 65_537 + int(x0)
    base = _mix(np.array([key & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    with np.errstate(over="ignore"):
        counters = np.arange(int(np.prod(shape)), dtype=np.uint64) + base
    bits = _mix(counters) >> np.uint64(11)  # 53 bits: exactly representable
    return (bits.astype(np.float64) * 2.0 ** -53 - 0.5).reshape(shape)


@dataclass(frozen=True)
class Quantization:
    """What the user asked for: a mode and its parameter, and the dither seed.

    - ``quantize``: Δ = σ_noise/q (fpack's ``-q``), σ_noise of each tile estimated as the
      manifest estimates it (:func:`fitsae.data.normalize.noise_estimate`), or ``noise``;
    - ``max-error``: Δ = 2E, so no pixel moves by more than E;
    - ``lossless``: integer data only: Δ = one stored unit (BSCALE), no dither, k the stored
      integer.

    Integer sources are written back as integers, which a dithered x̂ is not: for them Δ is the
    largest odd number of stored units not above the requested step (at least one), without
    dither. x̂ = zero + k·Δ is then an integer, still within Δ/2, and an odd Δ keeps rounding
    symmetric, so the error stays zero-mean. With ``int_to_float`` (fpack's ``-i2f``) an
    integer source may also be quantized as a float one, at the requested step with dither, and
    decodes to float32: the only way to reach a step between one and three stored units, where
    images with a noise of a few counts (astropy's M13) need it (see :meth:`frames`).
    """

    mode: str
    level: float | None = None  # q, for "quantize"
    max_error: float | None = None  # E, for "max-error"
    noise: float | None = None  # σ_noise given instead of estimated, for "quantize"
    seed: int = 1
    int_to_float: bool = False  # integer sources quantized (and decoded) as float, for quantize/max-error

    def __post_init__(self):
        if self.mode not in MODES:
            raise CodecError(f"quantization mode {self.mode!r}: must be one of {', '.join(MODES)}")
        if self.mode == "quantize" and not (self.level and self.level > 0 and math.isfinite(self.level)):
            raise CodecError(f"--quantize-level {self.level}: must be a positive number")
        if self.mode == "max-error" and not (self.max_error and self.max_error > 0 and math.isfinite(self.max_error)):
            raise CodecError(f"--max-error {self.max_error}: must be a positive number (physical units)")
        if self.int_to_float and self.mode == "lossless":
            raise CodecError("--int-to-float goes with --quantize-level or --max-error, not --lossless")
        if self.noise is not None and not (self.noise > 0 and math.isfinite(self.noise)):
            raise CodecError(f"--noise {self.noise}: must be a positive number (physical units)")

    def frames(self, where: str, bitpix: int, bzero: float, bscale: float, noise: float, seed_plane: int,
               y0: int, x0: int, shape: tuple) -> tuple["TileFrame", ...]:
        """The quantization frames (Δ, zero point, dither) one tile may be coded in.

        One frame, except with ``int_to_float`` on an integer source: the float step with dither
        and the whole odd number of counts below it (one count: lossless), both within half the
        requested step; the encoder keeps the one coded in fewer bytes. Below a few counts of
        noise the dither costs more than it saves (a step under one count only adds the dither's
        bits), so neither is always the smaller. ``noise`` is the tile's σ_noise estimate
        (physical units); ``where`` names the file, HDU and tile for errors.
        """
        integer = bitpix > 0
        if self.mode == "lossless":
            if not integer:
                raise CodecError(f"{where}: --lossless needs integer pixels, this HDU has BITPIX {bitpix} "
                                 "(use --quantize-level or --max-error for float data)")
            return (TileFrame(float(bscale), float(bzero), np.zeros(shape), True, 1),)
        sigma = self.noise if self.noise is not None else noise
        target = 2.0 * self.max_error if self.mode == "max-error" else sigma / self.level
        if not (target > 0 and math.isfinite(target)):
            raise CodecError(f"{where}: the noise estimate is {sigma!r}, so the step σ/q cannot be set; "
                             "give --noise or use --max-error")
        out = ()
        if not integer or self.int_to_float:
            out += (TileFrame(float(target), 0.0, dither(self.seed, seed_plane, y0, x0, shape), False),)
        if integer:
            units = max(1, int(math.floor(target / abs(bscale))))
            step = units if units % 2 else units - 1
            out += (TileFrame(float(step * bscale), float(bzero), np.zeros(shape), True, int(step)),)
        return out


@dataclass
class TileFrame:
    """x = zero + (k − u)·delta. Integer sources: k·units is the stored integer (u = 0)."""

    delta: float
    zero: float
    u: np.ndarray
    integer: bool
    units: int = 0  # stored units per step (integer sources)

    def quantize(self, pixels: np.ndarray, raw: np.ndarray | None) -> np.ndarray:
        """Integers k (int64) of a tile: ``raw`` stored integers for integer sources, else physical."""
        if self.integer:
            return np.floor(np.asarray(raw, np.int64) / self.units + 0.5).astype(np.int64)
        return np.floor((pixels - self.zero) / self.delta + self.u + 0.5).astype(np.int64)

    def restore(self, k: np.ndarray) -> np.ndarray:
        """x̂ in physical units (float64) of integers ``k``."""
        return self.zero + (np.asarray(k, np.float64) - self.u) * self.delta

    def rms_error(self) -> float:
        """The RMS of x̂ − x over the tile, physical units: the σ of these modes' decoded pixels.

        Subtractive dither makes the error uniform on [−Δ/2, Δ/2] whatever the pixel: Δ/√12. An
        integer step of n stored units rounds to one of n values a unit apart, equally often where
        the pixels spread over more than a step: unit·√((n² − 1)/12), so 0 when lossless (n = 1).
        """
        if not self.integer:
            return self.delta / math.sqrt(12.0)
        unit = abs(self.delta) / self.units
        return unit * math.sqrt((self.units ** 2 - 1) / 12.0)

    def to_grid(self, value: np.ndarray) -> np.ndarray:
        """Physical values → the k frame (floats): where a prediction sits among the integers."""
        return (np.asarray(value, np.float64) - self.zero) / self.delta + self.u
