"""FITS files for the io/data tests, written byte by byte where astropy would rescale on write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits


def write_raw_fits(path, raw: np.ndarray, bitpix: int, extra_hdus: int = 0, **keywords) -> Path:
    """A FITS file whose data are exactly ``raw`` (stored big-endian) with header ``keywords``.

    astropy's writer would apply BSCALE/BZERO to the data; building the bytes by hand is the only
    way to test arbitrary raw values under arbitrary scaling keywords.
    """
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = raw.ndim
    for k, n in enumerate(reversed(raw.shape), 1):
        header[f"NAXIS{k}"] = n
    if extra_hdus:
        header["EXTEND"] = True
    for key, value in keywords.items():
        header[key] = value
    data = np.ascontiguousarray(raw, dtype=raw.dtype.newbyteorder(">")).tobytes()
    data += b"\0" * (-len(data) % 2880)
    Path(path).write_bytes(header.tostring().encode() + data)
    return Path(path)


def random_raw(bitpix: int, shape, rng: np.random.Generator, special: bool = True) -> np.ndarray:
    """Raw values covering the whole range of the type (and NaN/Inf/-0.0 for floats)."""
    if bitpix > 0:
        dtype = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}[bitpix]
        info = np.iinfo(dtype)
        raw = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        raw.flat[:2] = [info.min, info.max]
        return raw
    dtype = np.float32 if bitpix == -32 else np.float64
    raw = (rng.normal(0, 1, size=shape) * 10.0 ** rng.integers(-3, 6, size=shape)).astype(dtype)
    if special:
        raw.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    return raw


def gaussian_field(rng, shape, background=100.0, sigma=5.0, dtype=np.float32) -> np.ndarray:
    """Noise on a flat background with one bright blob: the pixels tests normalize."""
    data = rng.normal(background, sigma, size=shape)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    data += 50 * sigma * np.exp(-((yy - shape[-2] / 2) ** 2 + (xx - shape[-1] / 3) ** 2) / 8.0)
    return data.astype(dtype)
