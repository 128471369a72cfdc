"""Image planes as the codec sees them: read from FITS, cut into tiles, and written back.

Shared by the lossy mode (:mod:`fitsae.codec.files`) and the error-bounded modes
(:mod:`fitsae.codec.bounded`), so both cut, pad, read and store planes identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from fitsae.codec.errors import CodecError

__all__ = ["Geometry", "SourcePlane", "pad", "read_plane", "physical", "stored_hdu"]


@dataclass
class Geometry:
    """How a model cuts a plane: tile size, and the padded shape of a (h, w) tile."""

    tile: tuple
    stride: int
    fixed: bool  # a dense model takes exactly one image size

    @classmethod
    def of(cls, model, tile: int) -> "Geometry":
        fixed_h, fixed_w = model.image_shape[:2]
        if fixed_h is not None:
            return cls((int(fixed_h), int(fixed_w)), 1, True)
        stride = int(model.stride)
        if tile % stride:
            raise CodecError(f"--tile {tile} is not a multiple of the model's stride {stride}")
        return cls((int(tile), int(tile)), stride, False)

    def padded(self, h: int, w: int) -> tuple:
        if self.fixed:
            return self.tile
        return (h + (-h) % self.stride, w + (-w) % self.stride)

    def origins(self, height: int, width: int) -> list[tuple]:
        th, tw = self.tile
        return [(y, x, min(th, height - y), min(tw, width - x)) for y in range(0, height, th) for x in range(0, width, tw)]


def pad(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Mirror-pad a tile to ``shape`` (the border adds no edges to spend bits on)."""
    ph, pw = shape[0] - a.shape[0], shape[1] - a.shape[1]
    return np.pad(a, ((0, ph), (0, pw)), mode="symmetric") if ph or pw else a


@dataclass
class SourcePlane:
    """One plane of a source HDU: physical pixels (NaN where BLANK/NaN), header, and for
    integer data the stored integers themselves (what lossless coding reproduces)."""

    pixels: np.ndarray  # float64 physical
    header: fits.Header
    extname: str
    extver: int | None
    raw: np.ndarray | None  # int64 stored values (integer sources only)


def read_plane(row) -> SourcePlane:
    """Read one manifest row's plane; :class:`CodecError` naming file, HDU and plane if it fails."""
    from fitsae.codec.container import source_header
    from fitsae.io.read import read_plane_astropy

    raw = None
    try:
        with fits.open(row.path, memmap=False) as hdul:
            pixels = np.asarray(read_plane_astropy(hdul, row.hdu, row.plane, row.naxis), dtype=np.float64)
            full = hdul[row.hdu].header
            header = source_header(full)
            extname = str(full.get("EXTNAME", "")) if row.hdu else ""
            extver = int(full["EXTVER"]) if row.hdu and "EXTVER" in full else None
        if row.bitpix > 0:
            # astropy turns BLANK into NaN only when it scales to float (not for unsigned data),
            # and may scale to float32: the stored integers are read as they are.
            with fits.open(row.path, memmap=False, do_not_scale_image_data=True) as hdul:
                raw = np.asarray(read_plane_astropy(hdul, row.hdu, row.plane, row.naxis)).astype(np.int64)
            pixels = raw * float(row.bscale) + float(row.bzero)
            if row.blank is not None:
                pixels[raw == row.blank] = np.nan
    except Exception as err:  # astropy raises many types for damaged files; name the input
        raise CodecError(f"{row.path}, HDU {row.hdu}, plane {row.plane}: cannot read pixels: {err}") from err
    return SourcePlane(pixels, header, extname, extver, raw)


def physical(mu: np.ndarray, offset, scale, data_cfg, lo, hi) -> np.ndarray:
    """Normalized μ (N, H, W) → physical units, kept inside each tile's recorded range [lo, hi]."""
    from fitsae.data.normalize import denormalize

    phys = np.asarray(denormalize(np.asarray(mu, np.float64), np.float64(offset), np.float64(scale), data_cfg))
    return np.clip(phys, np.reshape(lo, (-1, 1, 1)), np.reshape(hi, (-1, 1, 1)))


def stored_hdu(values: np.ndarray, mask: np.ndarray, plane, header: fits.Header, primary: bool):
    """An image HDU of ``values`` (physical) in the source's representation where it fits.

    Integer sources keep BITPIX/BZERO/BSCALE/BLANK (values clipped to the type's range); an
    integer source without BLANK whose decoded plane has masked pixels becomes float32 with NaN.
    Float sources keep their precision (BITPIX −32 or −64).
    """
    kind = fits.PrimaryHDU if primary else fits.ImageHDU
    header = header.copy()
    if plane.bitpix > 0 and (plane.blank is not None or not mask.any()):
        dtype = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}[plane.bitpix]
        info = np.iinfo(dtype)
        raw = np.rint((np.where(mask, plane.bzero, np.asarray(values, np.float64)) - plane.bzero) / plane.bscale)
        raw = np.clip(raw, info.min, info.max).astype(dtype)
        if plane.blank is not None:
            raw[mask] = plane.blank
        hdu = kind(raw, header=header)
        # Set after construction: given with the data, astropy would take them as already applied.
        if plane.bzero != 0.0 or plane.bscale != 1.0:  # the identity scaling stays unwritten, as in the source
            hdu.header["BZERO"], hdu.header["BSCALE"] = plane.bzero, plane.bscale
        if plane.blank is not None:
            hdu.header["BLANK"] = plane.blank
        return hdu, raw
    dtype = np.float64 if plane.bitpix == -64 else np.float32
    data = np.where(mask, np.nan, values).astype(dtype)
    return kind(data, header=header), data


def normalized(row, pixels: np.ndarray, data_cfg) -> tuple:
    """``(bad, filled, offset, scale, x)``: NaN/BLANK mask, pixels with the background where
    nothing was measured, the plane's normalization and the normalized float32 plane."""
    import tensorflow as tf

    from fitsae.data.normalize import image_parameters, normalize

    bad = ~np.isfinite(pixels)
    filled = np.where(bad, row.median, pixels)
    offset, scale, _ = image_parameters(row.median, row.noise, data_cfg.normalization)
    x = np.asarray(normalize(tf.constant(filled, tf.float32), offset, scale, data_cfg), np.float32)
    return bad, filled, offset, scale, x


def plane_record(row, src: SourcePlane, offset, scale, n_filled: int):
    """The container's :class:`~fitsae.codec.container.Plane` (no tiles yet) of a manifest row."""
    from fitsae.codec.container import Plane

    return Plane(source=row.path, hdu=row.hdu, plane=row.plane, naxis=row.naxis, shape=(row.height, row.width),
                 offset=float(offset), scale=float(scale), n_filled=int(n_filled), bitpix=int(row.bitpix),
                 bzero=float(row.bzero), bscale=float(row.bscale), blank=row.blank, header=src.header,
                 extname=src.extname, extver=src.extver)
