"""The classical baselines, run the way users run them: fpack (astropy) and JPEG-XL.

Contract: each test tile (physical units) goes through a :class:`astropy.io.fits.CompImageHDU`
written to memory and read back as a file would be, with what ``fpack`` does and astropy does
not by default: 256×256 compression tiles and subtractive dithering (``SUBTRACTIVE_DITHER_1``)
seeded from the tile id, so every run writes the same bytes. :data:`DEFAULT_SETTINGS` lists the
settings (:class:`Setting` says what each does). Every setting reports two rates in bits per
pixel: ``payload`` (the coded data: the FITS heap, the JPEG-XL files) and ``file`` (the whole
file as written, headers and padding included), because on small tiles the headers dominate.

Why: astronomers already compress with fpack; the learned codec has to beat it at equal error.
"""

from __future__ import annotations

import importlib.util
import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.io import fits

__all__ = ["Setting", "DEFAULT_SETTINGS", "Result", "applicable", "roundtrip", "stored_integers",
           "rice_integers", "rice_steps", "dequantize", "TILE", "FITS_BLOCK"]

# cfitsio's SUBTRACTIVE_DITHER_1, fpack's default for floats.
_SUBTRACTIVE_DITHER_1 = 1
# fpack's compression tile; images smaller than this are one tile.
TILE = 256
FITS_BLOCK = 2880
# cfitsio's dither: a table of 10 000 uniform numbers from the Park–Miller generator.
_N_RANDOM = 10000
# RICE compresses 8/16/32-bit integers; the numpy type of each BITPIX's stored values.
_STORED_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32}
# JPEG-XL codes at most 16-bit integer samples.
_JXL_MAX = 65535


@dataclass(frozen=True)
class Setting:
    """One baseline configuration: ``codec`` ``RICE_1``, ``HCOMPRESS_1`` or ``JPEG_XL``.

    - ``RICE_1 q=…``: floats quantized to steps Δ = σ/q (cfitsio estimates σ per compression
      tile) with subtractive dither, then Rice-coded; integer input goes the same way through
      its physical values (fpack's ``-i2f``);
    - ``HCOMPRESS_1 s=…``: the H-transform with fpack's ``-s``, a scale in units of the RMS noise
      of the integers it compresses (:func:`_hcompress_scale` converts it to astropy's absolute
      scale as cfitsio does); float input is quantized at q = 4 first (fpack's default), integer
      input is compressed as its integers, as ``fpack -h -s`` does;
    - ``RICE_1 lossless``: integer input's stored integers;
    - ``JPEG-XL q=…``: JPEG-XL lossless (``imagecodecs``, libjxl's default effort) on the very
      integers RICE_1 q=… stores, read back from RICE's heap and dequantized with cfitsio's dither
      sequence (:func:`dequantize`): the same pixels, only the entropy coder differs;
      ``JPEG-XL lossless`` codes integer input's stored integers.

    ``quantize_level`` None means lossless on the stored integers (integer input only).
    """

    codec: str
    quantize_level: float | None
    hcomp_scale: float = 0.0

    @property
    def lossless(self) -> bool:
        return self.quantize_level is None

    @property
    def family(self) -> str:
        """The report list the setting's results go to: ``fpack`` or ``jpegxl``."""
        return "jpegxl" if self.codec == "JPEG_XL" else "fpack"

    @property
    def label(self) -> str:
        name = "JPEG-XL" if self.codec == "JPEG_XL" else self.codec
        if self.codec == "HCOMPRESS_1":
            return f"HCOMPRESS_1 s={self.hcomp_scale:g}"
        return f"{name} lossless" if self.lossless else f"{name} q={self.quantize_level:g}"

    def as_dict(self) -> dict:
        return {
            "compression_type": self.codec,
            "quantize_level": self.quantize_level,
            "hcomp_scale": self.hcomp_scale,
            "lossless": self.lossless,
            "label": self.label,
        }


_LEVELS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_HCOMPRESS_Q = 4.0
DEFAULT_SETTINGS: tuple[Setting, ...] = tuple(
    [Setting("RICE_1", q) for q in _LEVELS]
    + [Setting("HCOMPRESS_1", _HCOMPRESS_Q, s) for s in (0.5, 1.0, 2.5, 4.0, 8.0, 16.0)]
    + [Setting("JPEG_XL", q) for q in _LEVELS]
    + [Setting("RICE_1", None), Setting("JPEG_XL", None)]
)


@dataclass(frozen=True)
class Result:
    """One tile through one setting: the decoded pixels and the bytes it cost."""

    decoded: np.ndarray  # float64, the tile's shape, physical units
    payload_bytes: int   # the coded data: FITS heap or JPEG-XL files
    table_bytes: int     # the binary table's fixed rows (descriptors, ZSCALE/ZZERO)
    file_bytes: int      # the whole file as written


def applicable(setting: Setting, shape: tuple[int, int], integer: bool) -> str | None:
    """``None`` if ``setting`` can compress tiles of ``shape`` (integer input or not), else why not."""
    if setting.codec == "HCOMPRESS_1" and min(shape) < 4:
        return f"HCOMPRESS_1 needs tiles of at least 4×4 pixels, got {shape[0]}×{shape[1]}"
    if setting.lossless and not integer:
        return f"{setting.label} needs integer input (BITPIX > 0) in every evaluated tile"
    if setting.codec == "JPEG_XL" and importlib.util.find_spec("imagecodecs") is None:
        return "JPEG-XL needs the imagecodecs package (pip install 'fitsae[codecs]')"
    return None


def stored_integers(tile: np.ndarray, bitpix: int, bscale: float, bzero: float) -> np.ndarray:
    """The integers a BITPIX > 0 image stores for the physical values ``tile`` (x = k·BSCALE + BZERO).

    Raises ValueError when ``tile`` is not exactly such values (e.g. NaN-filled BLANK pixels) or
    when RICE cannot take the BITPIX (64).
    """
    if bitpix not in _STORED_DTYPES:
        raise ValueError(f"lossless RICE takes BITPIX 8, 16 or 32, not {bitpix}")
    x = np.asarray(tile, np.float64)
    k = np.rint((x - bzero) / bscale)
    info = np.iinfo(_STORED_DTYPES[bitpix])
    if not (np.all(k * bscale + bzero == x) and k.min() >= info.min and k.max() <= info.max):
        raise ValueError(f"the tile's values are not BITPIX={bitpix} integers × {bscale:g} + {bzero:g}")
    return k.astype(_STORED_DTYPES[bitpix])


def _tile_shape(shape) -> tuple[int, int]:
    return (min(TILE, int(shape[0])), min(TILE, int(shape[1])))


def _tiles(shape):
    """Slices of the compression tiles of an image of ``shape``, in FITS row order (x fastest)."""
    th, tw = _tile_shape(shape)
    return [(slice(y, min(y + th, shape[0])), slice(x, min(x + tw, shape[1])))
            for y in range(0, shape[0], th) for x in range(0, shape[1], tw)]


def _dither_seed(tile_id: int) -> int:
    # cfitsio accepts 1..10000; deriving it from the tile id makes the baseline reproducible.
    return 1 + int(tile_id) % _N_RANDOM


def _write(data: np.ndarray, codec: str, **options) -> bytes:
    hdu = fits.CompImageHDU(data, compression_type=codec, tile_shape=_tile_shape(data.shape), **options)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


@lru_cache(maxsize=2 * len(_LEVELS))  # every level of the tile in hand, whatever order settings come in
def _rice(data: bytes, shape: tuple, quantize_level: float, seed: int) -> bytes:
    """The dithered RICE_1 file of float32 pixels ``data``: RICE_1, JPEG-XL (its integers) and
    HCOMPRESS_1 (its noise) at one level all start from it, so a tile is quantized once per level."""
    pixels = np.frombuffer(data, np.float32).reshape(shape)
    return _write(pixels, "RICE_1", quantize_level=quantize_level, quantize_method=_SUBTRACTIVE_DITHER_1,
                  dither_seed=seed)


def _layout(raw: bytes) -> tuple[int, int, int]:
    """(header bytes before the table data, table row bytes, heap bytes) of a compressed file."""
    with fits.open(io.BytesIO(raw), disable_image_compression=True) as table:
        header = table[1].header
        return (int(table.fileinfo(1)["datLoc"]), int(header["NAXIS1"]) * int(header["NAXIS2"]),
                int(header["PCOUNT"]))


def file_size(header_bytes: int, table_bytes: int, heap_bytes: int) -> int:
    """Bytes of a FITS file whose table data (rows, then heap) start at ``header_bytes``."""
    return header_bytes + FITS_BLOCK * math.ceil((table_bytes + heap_bytes) / FITS_BLOCK)


def _fits_result(raw: bytes, decode) -> Result:
    header, table, heap = _layout(raw)
    with fits.open(io.BytesIO(raw)) as image:
        decoded = decode(np.asarray(image[1].data))
    return Result(decoded=decoded, payload_bytes=heap, table_bytes=table, file_bytes=len(raw))


@lru_cache(maxsize=1)
def _randoms() -> np.ndarray:
    """cfitsio's ``fits_rand_value``: 10 000 Park–Miller uniforms, stored as float32."""
    a, m, seed = 16807.0, 2147483647.0, 1.0
    out = np.empty(_N_RANDOM, np.float32)
    for i in range(_N_RANDOM):
        temp = a * seed
        seed = temp - m * int(temp / m)
        out[i] = seed / m
    if seed != 1043618065.0:  # cfitsio's own check of the generator
        raise RuntimeError("the dither generator does not reproduce cfitsio's sequence")
    return out


def _dither(n: int, row: int) -> np.ndarray:
    """The dither offsets of a tile of ``n`` pixels, ``row`` = tile index (0-based) + ZDITHER0."""
    rand = _randoms()
    iseed = (row - 1) % _N_RANDOM
    parts, left = [], n
    while left > 0:
        start = int(rand[iseed] * 500)
        take = min(left, _N_RANDOM - start)
        parts.append(rand[start:start + take])
        left -= take
        iseed = (iseed + 1) % _N_RANDOM
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def dequantize(ints: np.ndarray, zscale: float, zzero: float, row: int) -> np.ndarray:
    """cfitsio's SUBTRACTIVE_DITHER_1 decode of one tile: x̂ = (k − r + ½)·ZSCALE + ZZERO, float32.

    ``row`` is the tile's 0-based index plus ZDITHER0; ``r`` the dither sequence it selects.
    """
    k = np.asarray(ints, np.float64).ravel()
    values = ((k - _dither(k.size, row) + 0.5) * zscale + zzero).astype(np.float32)
    return values.reshape(np.shape(ints))


def rice_integers(raw: bytes) -> list[tuple[np.ndarray, float, float]]:
    """The quantized integers, ZSCALE and ZZERO of each tile of a RICE_1 file, in tile order.

    Read from the file's heap and decoded with astropy's Rice decoder, so they are exactly the
    integers cfitsio's quantization produced. Tiles cfitsio could not quantize (stored
    losslessly with GZIP instead) raise ValueError.
    """
    from astropy.io.fits.hdu.compressed._codecs import Rice1

    with fits.open(io.BytesIO(raw), disable_image_compression=True) as table:
        header, rows = table[1].header, table[1].data
        shape = (int(header["ZNAXIS2"]), int(header["ZNAXIS1"]))
        blocksize = int(header.get("ZVAL1", 32))
        out = []
        for i, (ys, xs) in enumerate(_tiles(shape)):
            code = np.asarray(rows["COMPRESSED_DATA"][i], np.uint8)
            if code.size == 0:
                raise ValueError("cfitsio stored a tile losslessly (it could not quantize it)")
            n = (ys.stop - ys.start) * (xs.stop - xs.start)
            ints = Rice1(blocksize=blocksize, bytepix=4, tilesize=n).decode(code)
            out.append((ints.reshape(ys.stop - ys.start, xs.stop - xs.start).astype(np.int64),
                        float(rows["ZSCALE"][i]), float(rows["ZZERO"][i])))
    return out


def rice_steps(image: np.ndarray, quantize_level: float, tile_id: int = 0) -> np.ndarray:
    """The step Δ (ZSCALE, physical units) of every pixel as ``RICE_1 q=quantize_level`` quantizes
    ``image`` in :func:`roundtrip` with the same ``tile_id`` (cfitsio's own per-tile noise estimate),
    float64 of the image's shape: what ℓ∞/Δ and equal-q comparisons are measured against."""
    data = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    raw = _rice(data.tobytes(), data.shape, quantize_level, _dither_seed(tile_id))
    steps = np.empty(data.shape, np.float64)
    for (_, zscale, _), where in zip(rice_integers(raw), _tiles(data.shape), strict=True):
        steps[where] = zscale
    return steps


def _jpegxl(ints: np.ndarray) -> tuple[int, np.ndarray]:
    """JPEG-XL lossless on the integers ``ints``: the bytes it spends and the integers it decodes to.

    The tile's minimum is subtracted (it would travel with ZZERO); a range beyond 16 bits is
    split into a high and a low 16-bit image, both coded. What is scored is what decodes, so a
    codec that were not lossless would show as error, never pass unseen.
    """
    import imagecodecs

    k = np.asarray(ints, np.int64)
    base = int(k.min())
    k = k - base
    planes = [k] if k.max() <= _JXL_MAX else [k >> 16, k & _JXL_MAX]
    size, decoded = 0, np.zeros(k.shape, np.int64)
    for plane in planes:
        code = imagecodecs.jpegxl_encode(plane.astype(np.uint16), lossless=True)
        size += len(code)
        decoded = (decoded << 16) | imagecodecs.jpegxl_decode(code).astype(np.int64)
    return size, decoded + base


def _hcompress_scale(scale: float, ints: np.ndarray) -> int:
    """fpack's HCOMPRESS scale: ``scale`` × the RMS noise of the integers, rounded (cfitsio).

    cfitsio (what fpack runs) takes a positive scale relative to the noise of the integers it
    compresses; astropy passes its ``hcomp_scale`` on as the absolute integer scale. The noise is
    cfitsio's: the smallest non-zero of its noise2/noise3/noise5 estimates (scaled medians of
    per-row |lag-2 differences| of orders 1, 2 and 4, median over rows), without its row sampling;
    the rounding to an integer absorbs the small difference that leaves.
    """
    k = np.asarray(ints, np.float64)
    if k.shape[1] < 9:
        k = k.reshape(1, -1)  # short rows: one long row, as for a 1-D tile
    estimates = []
    for factor, d in ((0.6052697, 2 * k[:, 4:-4] - k[:, 2:-6] - k[:, 6:-2]),
                      (1.0483579, k[:, 2:] - k[:, :-2]),
                      (0.1772048, 6 * k[:, 4:-4] - 4 * k[:, 2:-6] - 4 * k[:, 6:-2] + k[:, :-8] + k[:, 8:])):
        estimates.append(factor * float(np.median(np.median(np.abs(d), axis=1))) if d.size else 0.0)
    noise = estimates[0]
    for other in estimates[1:]:
        if other != 0.0 and (other < noise or noise == 0.0):
            noise = other
    return int(scale * noise + 0.5)


def roundtrip(tile: np.ndarray, setting: Setting, tile_id: int = 0, stored=None) -> Result:
    """Compress one 2-D tile with ``setting`` in memory, decode it, and measure the bytes.

    Parameters
    ----------
    tile : array (H, W)
        Physical values.
    setting : Setting
    tile_id : int
        Picks the dither seed, so a tile is always dithered the same way.
    stored : tuple (ints, bscale, bzero), optional
        The tile's stored integers (:func:`stored_integers`) when the input is integer: the
        lossless settings need them, HCOMPRESS_1 compresses them instead of quantized floats.
    """
    data = np.ascontiguousarray(np.asarray(tile, dtype=np.float32))
    if data.ndim != 2:
        raise ValueError(f"baselines expect a 2-D tile, got shape {data.shape}")
    if setting.lossless and stored is None:
        raise ValueError(f"{setting.label} needs the tile's stored integers")
    if stored is not None and (setting.lossless or setting.codec == "HCOMPRESS_1"):
        return _integer_roundtrip(stored, setting)
    seed = _dither_seed(tile_id)
    quantized = dict(quantize_level=setting.quantize_level, quantize_method=_SUBTRACTIVE_DITHER_1, dither_seed=seed)
    rice = _rice(data.tobytes(), data.shape, setting.quantize_level, seed)
    if setting.codec == "RICE_1":
        return _fits_result(rice, lambda values: np.asarray(values, np.float64))
    if setting.codec == "HCOMPRESS_1":
        # HCOMPRESS quantizes exactly as RICE does (same level, seed and tiles): RICE's integers
        # are the ones whose noise sets the scale.
        ints = [k for k, _, _ in rice_integers(rice)]
        scale = int(np.median([_hcompress_scale(setting.hcomp_scale, k) for k in ints]))
        raw = _write(data, "HCOMPRESS_1", hcomp_scale=scale, **quantized)
        return _fits_result(raw, lambda values: np.asarray(values, np.float64))
    header, table, _ = _layout(rice)
    decoded = np.empty(data.shape, np.float64)
    payload = 0
    for i, ((ints, zscale, zzero), where) in enumerate(zip(rice_integers(rice), _tiles(data.shape), strict=True)):
        size, coded = _jpegxl(ints)
        payload += size
        decoded[where] = dequantize(coded, zscale, zzero, i + seed)
    return Result(decoded, payload, table, file_size(header, table, payload))


def _integer_roundtrip(stored, setting: Setting) -> Result:
    """``setting`` on integer input's stored integers: lossless RICE/JPEG-XL, or HCOMPRESS_1."""
    ints, bscale, bzero = stored

    def physical(values):
        return np.asarray(values, np.float64) * bscale + bzero

    if setting.codec == "JPEG_XL":
        header, table, _ = _layout(_write(ints, "RICE_1"))
        decoded = np.empty(ints.shape, np.int64)
        payload = 0
        for where in _tiles(ints.shape):
            size, decoded[where] = _jpegxl(ints[where])
            payload += size
        return Result(physical(decoded), payload, table, file_size(header, table, payload))
    scale = 0
    if setting.codec == "HCOMPRESS_1":
        scale = int(np.median([_hcompress_scale(setting.hcomp_scale, ints[where]) for where in _tiles(ints.shape)]))
    return _fits_result(_write(ints, setting.codec, hcomp_scale=scale), physical)
