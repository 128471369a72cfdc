"""The ``.fae.fits`` container, version 2: a FITS file astropy opens, one table row per tile.

This layout is the contract between ``compress`` and ``decompress``, so it is spelled out. Every
HDU carries ``CHECKSUM``/``DATASUM``, verified on read: altered bytes are an error, never a
silently different image.

- primary HDU, no data: ``FAEFMT`` = ``fitsae-codec-2``, ``FAEVER``, ``MODDIG`` (SHA-256 of the
  frozen model, :mod:`fitsae.codec.artifact`), ``RUNDIR``/``CKPTSTEP`` (where the model came
  from), ``ETA`` (the budget), ``ETASEL`` (``best``, or ``fixed``: the plain mask), ``LATCH``,
  ``TABLES``, ``NORM``/``ASINHA`` (normalization), ``TILEH``/``TILEW``, ``NPLANES``; in the
  error-bounded modes ``FAEMODE``, ``DITHSEED``, ``RESFAM`` and the step's ``QLEVEL``/``MAXERR``/
  ``NOISE`` (:func:`fitsae.codec.bounded.header_cards`);
- per image plane i, a binary table ``TILES`` (EXTVER i). Header: ``SRCFILE``, ``SRCHDU``,
  ``SRCPLANE``, ``SRCNAXIS``, ``SRCNAME``/``SRCVER`` (the source's EXTNAME/EXTVER),
  ``ORIGH``/``ORIGW``, ``OFFSET``/``SCALE`` (the normalization's shift and scale, :class:`Plane`),
  ``NFILLED`` (NaN/BLANK pixels), ``ORIGBPX``/``ORIGBZ``/``ORIGBS``/``ORIGBLK`` (the source's
  BITPIX/BZERO/BSCALE/BLANK). One row per tile: ``Y0``, ``X0``, ``H``, ``W`` (where it sits),
  ``ETA`` (η′; 0: the tile's median alone, ``DATA`` then holds it as one big-endian float32 —
  normalized in the lossy mode; in the error-bounded modes two, the median and σ_noise, physical),
  ``NESC`` (escaped latents), ``LO``/``HI`` (decoded values are kept inside this range),
  ``BITSEST`` (the bits the tables predicted), ``MUSUM`` (SHA-256 of the decoded μ), ``DATA``
  (coded latents) and ``MASK`` (zlib-packed NaN/BLANK mask, empty when none); in the
  error-bounded modes also ``DELTA``, ``ZERO``, ``UNITS`` (the tile's quantization),
  ``RNESC``/``RDATA`` (coded pixels), ``PIXSUM`` (SHA-256 of the decoded pixels) and ``ZEROS``
  (exact zeros, packed like ``MASK``), ``RFAM`` (the tile's residual density; empty when
  ``RESFAM`` names one for all tiles), ``RWIDEN`` (width-table entries the tile's widths are
  moved up by) and ``RCTX`` (the interlaced context's parameters, 3 bytes per pass,
  :mod:`fitsae.codec.context`; empty: one pass under the model alone), each absent in containers
  written before it. A section decodes without reading the other rows;
- per plane, a header-only image HDU ``SRCHDR`` (EXTVER i) holding the source HDU's header
  (WCS and every other card), so the decoded file keeps it.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from fitsae import __version__
from fitsae.codec.errors import CodecError

__all__ = ["FORMAT", "FORMAT_V1", "Tile", "BoundedTile", "Plane", "write_container", "read_container", "pack_mask", "unpack_mask",
           "source_header"]

FORMAT = "fitsae-codec-2"
FORMAT_V1 = "fitsae-latent-1"

# Cards that describe the source HDU's data layout, not the image: the decoded file gets its own.
_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK",
               "CHECKSUM", "DATASUM", "GROUPS", "EXTNAME", "EXTVER"}


@dataclass
class Tile:
    y0: int
    x0: int
    h: int
    w: int
    eta: int
    escapes: int
    lo: float
    hi: float
    bits_estimated: float
    mu_checksum: str
    data: bytes
    mask: bytes = b""
    bounded: "BoundedTile | None" = None  # the error-bounded modes' pixels


@dataclass
class BoundedTile:
    """A tile's quantized pixels in the error-bounded modes (:mod:`fitsae.codec.bounded`)."""

    delta: float  # step Δ, physical units
    zero: float  # x = zero + (k − u)·Δ
    units: int  # stored integer units per step (integer sources), else 0
    escapes: int  # escaped residuals
    data: bytes  # coded residuals
    checksum: str  # SHA-256 of the decoded pixels (float64, NaN where masked)
    zeros: bytes = b""  # zlib-packed mask of exact zeros (float sources)
    family: str = ""  # residual density of this tile ("": the container's RESFAM)
    widen: int = 0  # width-table entries every width of the tile is moved up by
    context: bytes = b""  # interlaced-context parameters (b"": one pass under the model alone)


@dataclass
class Plane:
    """One source plane and its tiles. ``offset``/``scale`` (headers ``OFFSET``/``SCALE``) are the
    normalization's shift and scale: the manifest's ``median`` and noise σ, or 0 and 1 under
    ``none``; never the median itself."""

    source: str
    hdu: int
    plane: int
    naxis: int
    shape: tuple
    offset: float
    scale: float
    n_filled: int
    bitpix: int
    bzero: float
    bscale: float
    blank: int | None
    header: fits.Header
    extname: str = ""
    extver: int | None = None
    tiles: list = field(default_factory=list)

    @property
    def payload_bytes(self) -> int:
        return sum(len(t.data) + len(t.mask) + (len(t.bounded.data) + len(t.bounded.zeros) if t.bounded else 0)
                   for t in self.tiles)


def source_header(header: fits.Header) -> fits.Header:
    """The source HDU's cards without the structural ones (WCS and the rest stay).

    ``EXTNAME``/``EXTVER`` go too: the container's ``SRCHDR`` HDU has its own, so the source's
    travel as ``SRCNAME``/``SRCVER`` in the ``TILES`` header (:attr:`Plane.extname`).
    """
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or (key.startswith("NAXIS") and key[5:].isdigit()):
            continue
        out.append(card, end=True)
    return out


def pack_mask(mask: np.ndarray) -> bytes:
    """NaN/BLANK mask of a tile → zlib of its packed bits (b"" when nothing is masked)."""
    if not mask.any():
        return b""
    return zlib.compress(np.packbits(mask.astype(bool), axis=None).tobytes(), 9)


def unpack_mask(data: bytes, shape: tuple) -> np.ndarray:
    if not data:
        return np.zeros(shape, bool)
    bits = np.unpackbits(np.frombuffer(zlib.decompress(data), np.uint8))[: int(np.prod(shape))]
    return bits.reshape(shape).astype(bool)


def _tiles_hdu(plane: Plane, index: int) -> fits.BinTableHDU:
    t = plane.tiles
    cols = [
        fits.Column("Y0", "J", array=np.array([x.y0 for x in t], np.int32)),
        fits.Column("X0", "J", array=np.array([x.x0 for x in t], np.int32)),
        fits.Column("H", "J", array=np.array([x.h for x in t], np.int32)),
        fits.Column("W", "J", array=np.array([x.w for x in t], np.int32)),
        fits.Column("ETA", "J", array=np.array([x.eta for x in t], np.int32)),
        fits.Column("NESC", "J", array=np.array([x.escapes for x in t], np.int32)),
        fits.Column("LO", "D", array=np.array([x.lo for x in t], np.float64)),
        fits.Column("HI", "D", array=np.array([x.hi for x in t], np.float64)),
        fits.Column("BITSEST", "D", array=np.array([x.bits_estimated for x in t], np.float64)),
        fits.Column("MUSUM", "64A", array=np.array([x.mu_checksum for x in t])),
        fits.Column("DATA", "PB()", array=np.array([np.frombuffer(x.data, np.uint8) for x in t] + [None],
                                                   dtype=object)[:-1]),
        fits.Column("MASK", "PB()", array=np.array([np.frombuffer(x.mask, np.uint8) for x in t] + [None],
                                                   dtype=object)[:-1]),
    ]
    if t and t[0].bounded is not None:
        cols += _bounded_columns([x.bounded for x in t])
    hdu = fits.BinTableHDU.from_columns(cols, name="TILES", ver=index + 1)
    h = hdu.header
    h["SRCFILE"] = str(plane.source)
    h["SRCHDU"] = (int(plane.hdu), "source HDU index")
    h["SRCPLANE"] = (int(plane.plane), "plane of a cube (0 for 2-D images)")
    h["SRCNAXIS"] = (int(plane.naxis), "NAXIS of the source HDU")
    h["ORIGH"], h["ORIGW"] = int(plane.shape[0]), int(plane.shape[1])
    h["OFFSET"] = (float(plane.offset), "normalization offset (physical units)")
    h["SCALE"] = (float(plane.scale), "normalization scale (physical units per unit)")
    h["NFILLED"] = (int(plane.n_filled), "NaN/BLANK pixels (restored from MASK)")
    h["ORIGBPX"] = (int(plane.bitpix), "BITPIX of the source")
    h["ORIGBZ"] = (float(plane.bzero), "BZERO of the source")
    h["ORIGBS"] = (float(plane.bscale), "BSCALE of the source")
    if plane.blank is not None:
        h["ORIGBLK"] = (int(plane.blank), "BLANK of the source")
    if plane.extname:
        h["SRCNAME"] = (plane.extname, "EXTNAME of the source HDU")
    if plane.extver is not None:
        h["SRCVER"] = (int(plane.extver), "EXTVER of the source HDU")
    return hdu


def _bytes_column(name: str, values: list) -> fits.Column:
    return fits.Column(name, "PB()", array=np.array([np.frombuffer(v, np.uint8) for v in values] + [None],
                                                    dtype=object)[:-1])


def _bounded_columns(b: list) -> list:
    """DELTA, ZERO, UNITS, RNESC, RDATA (coded residuals), PIXSUM, ZEROS, RFAM, RWIDEN, RCTX: the error-bounded modes'."""
    return [
        fits.Column("DELTA", "D", array=np.array([x.delta for x in b], np.float64)),
        fits.Column("ZERO", "D", array=np.array([x.zero for x in b], np.float64)),
        fits.Column("UNITS", "K", array=np.array([x.units for x in b], np.int64)),
        fits.Column("RNESC", "J", array=np.array([x.escapes for x in b], np.int32)),
        _bytes_column("RDATA", [x.data for x in b]),
        fits.Column("PIXSUM", "64A", array=np.array([x.checksum for x in b])),
        _bytes_column("ZEROS", [x.zeros for x in b]),
        fits.Column("RFAM", "8A", array=np.array([x.family for x in b])),
        fits.Column("RWIDEN", "I", array=np.array([x.widen for x in b], np.int16)),
        _bytes_column("RCTX", [x.context for x in b]),
    ]


def _bounded_row(r, per_tile_family: bool, widen: bool, ctx: bool) -> BoundedTile:
    return BoundedTile(float(r["DELTA"]), float(r["ZERO"]), int(r["UNITS"]), int(r["RNESC"]),
                       np.asarray(r["RDATA"], np.uint8).tobytes(), str(r["PIXSUM"]),
                       np.asarray(r["ZEROS"], np.uint8).tobytes(),
                       str(r["RFAM"]) if per_tile_family else "", int(r["RWIDEN"]) if widen else 0,
                       np.asarray(r["RCTX"], np.uint8).tobytes() if ctx else b"")


def write_container(path, primary: fits.Header, planes: list[Plane]) -> int:
    """Write the container atomically (a temporary file renamed into place); returns its size."""
    path = Path(path)
    primary = primary.copy()
    primary["FAEFMT"] = (FORMAT, "fitsae codec container format")
    primary["FAEVER"] = (__version__, "fitsae version that wrote it")
    primary["NPLANES"] = (len(planes), "TILES tables that follow")
    hdus = [fits.PrimaryHDU(header=primary)]
    for i, plane in enumerate(planes):
        hdus.append(_tiles_hdu(plane, i))
        hdus.append(fits.ImageHDU(header=plane.header, name="SRCHDR", ver=i + 1))
    partial = path.with_name(f".{path.name}.partial")
    try:
        fits.HDUList(hdus).writeto(partial, overwrite=True, checksum=True)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _verify(path: Path, hdul) -> None:
    for i, hdu in enumerate(hdul):
        if "CHECKSUM" not in hdu.header and "DATASUM" not in hdu.header:
            continue  # v1 containers were written without
        if hdu.verify_datasum() == 0 or hdu.verify_checksum() == 0:
            name = hdu.name or "PRIMARY"
            ver = hdu.header.get("EXTVER")
            where = f"HDU {i} ({name}{'' if ver is None else f' {ver}'})"
            raise CodecError(f"{path}: {where} fails its FITS checksum: the file was altered or damaged")


def read_container(path) -> tuple[fits.Header, list[Plane]]:
    """Primary header and planes (tiles with their bytes) of a v2 container, all verified.

    Raises :class:`CodecError` naming the file (and HDU) for anything that is not an intact
    v2 container; a v1 container raises it with ``FAEFMT`` in the message (see
    :mod:`fitsae.codec.legacy`).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged files warn before they fail; the error below says it
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                header = hdul[0].header.copy()
                if header.get("FAEFMT") != FORMAT:
                    raise CodecError(f"{path}: not a fitsae codec container (FAEFMT={header.get('FAEFMT')!r}, "
                                     f"expected {FORMAT!r})")
                _verify(path, hdul)
                planes = _planes(path, hdul)
    except CodecError:
        raise
    except KeyError as err:
        raise CodecError(f"{path}: container header lacks {err}") from err
    except Exception as err:  # astropy raises many types for truncated or garbled files
        raise CodecError(f"{path}: cannot read as a FITS container: {err}") from err
    if len(planes) != header.get("NPLANES"):
        raise CodecError(f"{path}: has {len(planes)} TILES tables, header says {header.get('NPLANES')}")
    return header, planes


def _planes(path: Path, hdul) -> list[Plane]:
    headers = {hdu.header.get("EXTVER"): source_header(hdu.header) for hdu in hdul[1:] if hdu.name == "SRCHDR"}
    planes = []
    for hdu in hdul[1:]:
        if hdu.name != "TILES":
            continue
        h, d = hdu.header, hdu.data
        names = d.columns.names
        bounded, per_tile_family, widen, ctx = "RDATA" in names, "RFAM" in names, "RWIDEN" in names, "RCTX" in names
        ver = h.get("EXTVER")
        if ver not in headers:
            raise CodecError(f"{path}: TILES {ver} has no SRCHDR {ver}")
        tiles = [Tile(int(r["Y0"]), int(r["X0"]), int(r["H"]), int(r["W"]), int(r["ETA"]), int(r["NESC"]),
                      float(r["LO"]), float(r["HI"]), float(r["BITSEST"]), str(r["MUSUM"]),
                      np.asarray(r["DATA"], np.uint8).tobytes(), np.asarray(r["MASK"], np.uint8).tobytes(),
                      _bounded_row(r, per_tile_family, widen, ctx) if bounded else None)
                 for r in d]
        planes.append(Plane(
            source=h["SRCFILE"], hdu=int(h["SRCHDU"]), plane=int(h["SRCPLANE"]), naxis=int(h["SRCNAXIS"]),
            shape=(int(h["ORIGH"]), int(h["ORIGW"])), offset=float(h["OFFSET"]), scale=float(h["SCALE"]),
            n_filled=int(h["NFILLED"]), bitpix=int(h["ORIGBPX"]), bzero=float(h["ORIGBZ"]),
            bscale=float(h["ORIGBS"]), blank=int(h["ORIGBLK"]) if "ORIGBLK" in h else None,
            header=headers[ver], extname=str(h.get("SRCNAME", "")),
            extver=int(h["SRCVER"]) if "SRCVER" in h else None, tiles=tiles,
        ))
    return planes
