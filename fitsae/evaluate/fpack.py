"""The classical baseline: FITS tile compression (what ``fpack`` does) through astropy.

Astronomers already compress with fpack, so the learned codec has to beat it at equal error.
Each test tile (physical units, float32) is written as a :class:`astropy.io.fits.CompImageHDU`
into memory and read back, exactly as a file would be:

- ``RICE_1`` with ``quantize_level`` q in {1, 2, 4, 8, 16}: floats are quantized to steps of
  σ_noise/q (astropy/cfitsio estimate σ per tile) with subtractive dithering, then Rice-coded;
- ``HCOMPRESS_1`` at several ``hcomp_scale`` values (quantized at q = 4 first): the scale is in
  units of the tile's RMS noise, so larger scales throw away more.

The rate is the **compressed heap** (``PCOUNT`` of the binary table that carries the tiles),
i.e. the payload bytes, in bits per pixel. FITS 2880-byte block padding and headers are left out
on purpose: for a 64×64 tile they would dominate and say nothing about the codec. The fixed-size
table rows (heap descriptors, per-tile ZSCALE/ZZERO) are reported separately as ``table_bytes``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = ["FpackSetting", "DEFAULT_SETTINGS", "roundtrip", "FpackResult"]

# cfitsio's SUBTRACTIVE_DITHER_1, fpack's default for floats: dithering removes the bias that
# plain rounding to the quantization grid would introduce.
_SUBTRACTIVE_DITHER_1 = 1


@dataclass(frozen=True)
class FpackSetting:
    """One fpack configuration."""

    compression_type: str
    quantize_level: float
    hcomp_scale: float = 0.0

    @property
    def label(self) -> str:
        if self.compression_type == "HCOMPRESS_1":
            return f"HCOMPRESS_1 s={self.hcomp_scale:g} q={self.quantize_level:g}"
        return f"{self.compression_type} q={self.quantize_level:g}"

    def as_dict(self) -> dict:
        return {
            "compression_type": self.compression_type,
            "quantize_level": self.quantize_level,
            "hcomp_scale": self.hcomp_scale,
            "label": self.label,
        }


DEFAULT_SETTINGS: tuple[FpackSetting, ...] = tuple(
    [FpackSetting("RICE_1", q) for q in (1.0, 2.0, 4.0, 8.0, 16.0)]
    + [FpackSetting("HCOMPRESS_1", 4.0, s) for s in (1.0, 2.5, 4.0, 8.0, 16.0)]
)


@dataclass(frozen=True)
class FpackResult:
    decoded: np.ndarray  # float64, same shape as the tile
    heap_bytes: int
    table_bytes: int


def _dither_seed(tile_id: int) -> int:
    # cfitsio accepts 1..10000; deriving it from the tile id makes the baseline reproducible.
    return 1 + int(tile_id) % 10000


def applicable(setting: FpackSetting, shape: tuple[int, int]) -> str | None:
    """``None`` if ``setting`` can compress a tile of ``shape``, else the reason it cannot."""
    if setting.compression_type == "HCOMPRESS_1" and min(shape) < 4:
        return f"HCOMPRESS_1 needs tiles of at least 4×4 pixels, got {shape[0]}×{shape[1]}"
    return None


def roundtrip(tile: np.ndarray, setting: FpackSetting, tile_id: int = 0) -> FpackResult:
    """Compress one 2-D tile with ``setting`` in memory, decompress it, and measure the payload.

    The whole tile is one compression tile (cfitsio's default of one row per tile would charge
    per-row overhead that a real image of many rows amortises differently).
    """
    data = np.ascontiguousarray(np.asarray(tile, dtype=np.float32))
    if data.ndim != 2:
        raise ValueError(f"fpack baseline expects a 2-D tile, got shape {data.shape}")
    hdu = fits.CompImageHDU(
        data,
        compression_type=setting.compression_type,
        tile_shape=data.shape,
        quantize_level=setting.quantize_level,
        quantize_method=_SUBTRACTIVE_DITHER_1,
        dither_seed=_dither_seed(tile_id),
        hcomp_scale=setting.hcomp_scale,
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    raw = buffer.getvalue()
    # Opened as a plain binary table, the header says how big the heap and the table rows are.
    with fits.open(io.BytesIO(raw), disable_image_compression=True) as table:
        header = table[1].header
        heap_bytes = int(header["PCOUNT"])
        table_bytes = int(header["NAXIS1"]) * int(header["NAXIS2"])
    with fits.open(io.BytesIO(raw)) as image:
        decoded = np.array(image[1].data, dtype=np.float64)
    return FpackResult(decoded=decoded, heap_bytes=heap_bytes, table_bytes=table_bytes)
