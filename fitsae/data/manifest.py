"""The manifest: one JSON line per usable image plane, written once by ``fitsae index``.

Indexing reads every header with astropy exactly once, plus each plane's pixels once to measure
its median and noise (:func:`fitsae.data.normalize.robust_stats`). Training and evaluation then
never parse a FITS header: the manifest tells the native decoder where each plane's bytes are
and how to scale them. Anything unusable is collected as a rejection ``{path, hdu, reason}``
instead of stopping the scan, because one bad file among ten thousand should cost a line in a
report, not the run. Under ``mpirun`` the files are split over the ranks and the results
gathered, in input order, on every rank.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fitsae.data.config import DataConfig
from fitsae.data.normalize import robust_stats
from fitsae.errors import FitsaeError
from fitsae.io.errors import FitsInputError
from fitsae.io.native import decode_spec
from fitsae.io.read import read_plane_astropy
from fitsae.io.scan import ImageHDUInfo, scan_file

__all__ = ["ImagePlane", "Manifest", "ManifestError", "index_paths", "expand_paths", "tile_origins",
           "rejected_path", "load_or_index", "FITS_SUFFIXES"]

log = logging.getLogger("fitsae")

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")
# Noise and median of planes larger than this are measured on evenly spaced rows, so indexing
# a mosaic never holds more than this many pixels (32 MiB as float64).
MAX_STATS_PIXELS = 1 << 22


class ManifestError(FitsaeError, ValueError):
    """A manifest file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class ImagePlane:
    """One usable image plane and everything needed to read, decode and normalize it.

    ``data_offset`` is the byte offset of this plane's first pixel (None for compressed data,
    read through astropy). ``median``/``noise`` are the robust median (the background, which
    fills missing pixels and is the normalization's ``offset``) and noise σ in physical units;
    manifests written when ``median`` was named ``offset`` load as they are. ``tiles`` records
    the grid under the config used for indexing; the pipeline recomputes it from ``shape`` for
    its own config. ``truth_hdu``/``sigma_hdu`` are the HDUs of the image's ``TRUTH`` and
    ``SIGMA`` planes (same ``plane`` index, physical units; see :mod:`fitsae.io.scan`), None when
    the file has none — real data never do. Manifests written before these two fields existed
    load with None.
    """

    path: str
    hdu: int
    plane: int
    extname: str
    shape: tuple            # (height, width)
    naxis: int
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    dtype: str              # astropy's dtype for the physical values
    compressed: str | None
    data_offset: int | None
    file_size: int
    median: float
    noise: float
    noise_source: str
    header_noise: float | None
    n_masked: int
    n_pixels: int
    stats_sampled: bool
    tiles: tuple            # (ny, nx) under the index config
    truth_hdu: int | None = None
    sigma_hdu: int | None = None

    @property
    def height(self) -> int:
        return int(self.shape[0])

    @property
    def width(self) -> int:
        return int(self.shape[1])

    @property
    def spec(self):
        return decode_spec(self.bitpix, self.bscale, self.bzero, self.blank)

    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        record["shape"], record["tiles"] = list(self.shape), list(self.tiles)
        return json.dumps(record, allow_nan=False)

    @classmethod
    def from_record(cls, record: dict) -> "ImagePlane":
        if "offset" in record and "median" not in record:
            record = {("median" if key == "offset" else key): value for key, value in record.items()}
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        unknown, missing = set(record) - names, required - set(record)
        if unknown or missing:
            raise ValueError(f"unexpected keys {sorted(unknown)}, missing keys {sorted(missing)}")
        record = dict(record, shape=tuple(record["shape"]), tiles=tuple(record["tiles"]))
        return cls(**record)


class Manifest:
    """An ordered list of :class:`ImagePlane` rows, saved as JSON Lines."""

    def __init__(self, rows: Iterable[ImagePlane]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def __eq__(self, other) -> bool:
        return isinstance(other, Manifest) and self.rows == other.rows

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(row.to_json() + "\n" for row in self.rows))
        os.replace(tmp, path)  # readers never see a half-written manifest

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise ManifestError(f"cannot read manifest {path}: {err.strerror or err}") from err
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(ImagePlane.from_record(json.loads(line)))
            except (ValueError, TypeError) as err:
                raise ManifestError(f"manifest {path}, line {number}: {err}") from err
        return cls(rows)

    def summary(self) -> str:
        files = len({r.path for r in self.rows})
        pixels = sum(r.n_pixels for r in self.rows)
        masked = sum(r.n_masked for r in self.rows)
        compressed = sum(1 for r in self.rows if r.compressed)
        tiles = sum(math.prod(r.tiles) for r in self.rows)
        kinds = sorted({f"BITPIX {r.bitpix}→{r.dtype}" for r in self.rows})
        truth = sum(1 for r in self.rows if r.truth_hdu is not None)
        return (f"{len(self.rows)} image planes in {files} files, {tiles} tiles, {pixels} pixels "
                f"({masked} NaN/Inf/BLANK filled), {compressed} planes via astropy (compressed), "
                f"{truth} with a TRUTH plane; {', '.join(kinds) or 'no data'}")


def rejected_path(manifest_path: str | os.PathLike) -> Path:
    """``DIR/train.jsonl`` → ``DIR/train.rejected.jsonl``."""
    path = Path(manifest_path)
    return path.with_name(f"{path.stem}.rejected.jsonl")


def tile_origins(length: int, tile: int, stride: int, edge: str) -> list[int]:
    """Tile start positions along one axis of ``length`` pixels (see ``DataConfig.edge``)."""
    if length < tile:
        return [0] if edge == "pad" else []
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        if edge == "shift":
            origins.append(length - tile)
        elif edge == "pad":
            origins.append(origins[-1] + stride)
    return origins


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_paths(paths: Sequence[str]) -> tuple[list[str], list[dict]]:
    """Files named by ``paths`` (files, directories searched recursively, globs), in order, unique."""
    files, missing = [], []
    for item in paths:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                dirs.sort()
                found.extend(os.path.join(root, n) for n in sorted(names) if n.lower().endswith(FITS_SUFFIXES))
            if not found:
                missing.append({"path": item, "hdu": None, "reason": f"directory has no FITS files ({', '.join(FITS_SUFFIXES)})"})
            files.extend(found)
        elif os.path.lexists(item):
            files.append(item)
        elif _has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                missing.append({"path": item, "hdu": None, "reason": "glob matches no files"})
            files.extend(found)
        else:
            missing.append({"path": item, "hdu": None, "reason": "no such file or directory"})
    seen, unique = set(), []
    for f in files:
        absolute = os.path.abspath(f)
        if absolute not in seen:
            seen.add(absolute)
            unique.append(absolute)
    return unique, missing


def _plane_stats(hdul, info: ImageHDUInfo, plane: int, noise: float | None):
    height, width = info.height, info.width
    sampled = height * width > MAX_STATS_PIXELS
    if sampled:
        rows = np.unique(np.linspace(0, height - 1, max(2, MAX_STATS_PIXELS // width)).astype(int))
        data = np.stack([read_plane_astropy(hdul, info.hdu, plane, info.naxis, int(r)) for r in rows])
    else:
        data = read_plane_astropy(hdul, info.hdu, plane, info.naxis)
    quantum = abs(info.bscale) if info.bitpix > 0 else None
    return robust_stats(data, info.header_noise, quantum, noise), data.dtype.name, sampled


def _index_file(path: str, cfg: DataConfig) -> tuple[list[ImagePlane], list[dict]]:
    from astropy.io import fits

    infos, errors = scan_file(path)
    rows, rejected = [], [e.as_record() for e in errors]
    if not infos:
        return rows, rejected
    stride = cfg.tile_stride
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
        except Exception as err:
            return rows, rejected + [{"path": path, "hdu": None, "reason": f"not readable as FITS: {err}"}]
        with hdul:
            for info in infos:
                ny = len(tile_origins(info.height, cfg.tile, stride, cfg.edge))
                nx = len(tile_origins(info.width, cfg.tile, stride, cfg.edge))
                if ny * nx == 0:
                    rejected.append(FitsInputError(
                        path, info.hdu,
                        f"image {info.height}x{info.width} is smaller than the {cfg.tile}x{cfg.tile} tile "
                        "(set data.tile smaller, or data.edge=pad)").as_record())
                    continue
                itemsize = abs(info.bitpix) // 8
                for plane in range(info.planes):
                    where = f"plane {plane}: " if info.planes > 1 else ""
                    try:
                        stats, dtype, sampled = _plane_stats(hdul, info, plane, cfg.noise)
                    except ValueError as err:
                        rejected.append(FitsInputError(path, info.hdu, f"{where}{err}").as_record())
                        continue
                    except Exception as err:  # astropy could not decode these pixels
                        rejected.append(FitsInputError(path, info.hdu, f"{where}unreadable data: {err}").as_record())
                        continue
                    data_offset = None if info.data_offset is None else \
                        info.data_offset + plane * info.height * info.width * itemsize
                    rows.append(ImagePlane(
                        path=path, hdu=info.hdu, plane=plane, extname=info.extname,
                        shape=(info.height, info.width), naxis=info.naxis, bitpix=info.bitpix,
                        bscale=float(info.bscale), bzero=float(info.bzero), blank=info.blank,
                        dtype=dtype if info.compressed else info.spec.dtype,
                        compressed=info.compressed, data_offset=data_offset, file_size=info.file_size,
                        median=stats.median, noise=stats.noise, noise_source=stats.noise_source,
                        header_noise=info.header_noise, n_masked=stats.n_masked, n_pixels=stats.n_pixels,
                        stats_sampled=sampled, tiles=(ny, nx), truth_hdu=info.truth_hdu, sigma_hdu=info.sigma_hdu,
                    ))
    return rows, rejected


def index_paths(paths: Sequence[str], cfg: DataConfig | None = None, comm=None) -> tuple[Manifest, list[dict]]:
    """Scan FITS ``paths`` into a :class:`Manifest` and the list of rejected inputs.

    Parameters
    ----------
    paths : sequence of str
        Files, directories (recursive) or glob patterns.
    cfg : DataConfig, optional
        Tile size, stride and edge policy decide which images are too small; defaults otherwise.
    comm : mpi4py communicator, optional
        When given (e.g. ``fitsae.distributed.comm()``), rank 0 alone expands ``paths`` (one walk
        of a shared file system, not one per rank, and one file list even if files appear
        meanwhile), rank ``r`` scans files ``r::size`` of it and every rank receives the full,
        input-ordered result.

    Returns
    -------
    manifest : Manifest
    rejected : list of dict
        ``{"path", "hdu", "reason"}`` for every file or HDU that could not be used.
    """
    cfg = cfg or DataConfig()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    files, rejected = expand_paths(paths) if rank == 0 else (None, None)
    if size > 1:
        files, rejected = comm.bcast((files, rejected))
    mine = {i: _index_file(files[i], cfg) for i in range(rank, len(files), size)}
    if size > 1:
        merged = {}
        for part in comm.allgather(mine):
            merged.update(part)
        mine = merged
    rows = []
    for i in range(len(files)):
        file_rows, file_rejected = mine[i]
        rows.extend(file_rows)
        rejected.extend(file_rejected)
    return Manifest(rows), rejected


def load_or_index(cfg: DataConfig, comm=None, what: str = "") -> Manifest:
    """The manifest for ``cfg.paths``: loaded when it is a single ``.jsonl``, indexed otherwise.

    Rejected inputs are logged (one warning listing them); an empty result is an error. ``what``
    (e.g. "test data") prefixes the warning and the error, so the user knows which inputs they were.
    """
    prefix = f"{what}: " if what else ""
    if not cfg.paths:
        raise ManifestError(f"{prefix}data.paths is empty: give FITS files, directories, globs or a manifest .jsonl")
    try:
        if len(cfg.paths) == 1 and str(cfg.paths[0]).endswith(".jsonl"):
            manifest = Manifest.load(cfg.paths[0])
        else:
            manifest, rejected = index_paths(cfg.paths, cfg, comm)
            if rejected and (comm is None or comm.Get_rank() == 0):
                log.warning("%s%d input(s) rejected:\n%s", prefix, len(rejected),
                            "\n".join(f"  {r['path']} HDU {r['hdu']}: {r['reason']}" for r in rejected))
    except (OSError, ValueError) as err:
        if not prefix:
            raise
        raise ManifestError(f"{prefix}{err}") from err
    if not len(manifest):
        raise ManifestError(f"{prefix}no usable image in {', '.join(map(str, cfg.paths))}")
    return manifest
