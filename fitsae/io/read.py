"""Reading pixel regions: ranged raw reads for large uncompressed HDUs, astropy for the rest.

Small files are read whole by TensorFlow (``tf.io.read_file``) in the pipeline. Cube planes and
tiles of large mosaics would waste most of such a read, so :func:`read_raw_region` fetches only
the bytes of the wanted rows and columns with ``os.pread`` (the GIL is released during the
read). Tile-compressed HDUs and gzip-compressed files cannot be decoded natively;
:func:`read_region_astropy` decompresses just the wanted section through astropy.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict

import numpy as np

__all__ = ["read_raw_region", "read_region_astropy", "read_plane_astropy", "section_index"]

# A band read costs one syscall; row-by-row reads cost one per row but skip the unwanted
# columns. Read the whole band when it is at most this many times larger than the region.
_BAND_WASTE = 4


def read_raw_region(path: str, offset: int, width: int, itemsize: int,
                    y0: int, y1: int, x0: int, x1: int) -> bytes:
    """Raw (still big-endian) bytes of rows ``y0:y1``, columns ``x0:x1`` of a plane at ``offset``.

    Raises ``OSError`` if the file is missing, unreadable or shorter than the region needs.
    """
    rows, row_bytes = y1 - y0, width * itemsize
    start = offset + y0 * row_bytes
    fd = os.open(path, os.O_RDONLY)
    try:
        if x0 == 0 and x1 == width:
            return _pread_exact(fd, rows * row_bytes, start, path)
        cols = (x1 - x0) * itemsize
        if width <= _BAND_WASTE * (x1 - x0):
            band = np.frombuffer(_pread_exact(fd, rows * row_bytes, start, path), np.uint8)
            return band.reshape(rows, row_bytes)[:, x0 * itemsize:x0 * itemsize + cols].tobytes()
        return b"".join(_pread_exact(fd, cols, start + r * row_bytes + x0 * itemsize, path) for r in range(rows))
    finally:
        os.close(fd)


def _pread_exact(fd: int, count: int, offset: int, path: str) -> bytes:
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise OSError(f"{path}: truncated, wanted {count} bytes at offset {offset}, got {len(data)}")
    return data


class _OpenFiles:
    """A few open astropy HDULists, so reading many tiles of one compressed file opens it once.

    Each entry has its own lock: tf.data calls the fallback from several threads, and an
    HDUList's file position is shared state.
    """

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self.lock = threading.Lock()
        self.entries: OrderedDict = OrderedDict()

    def get(self, path: str):
        from astropy.io import fits

        with self.lock:
            entry = self.entries.pop(path, None)
            if entry is None:
                entry = (fits.open(path, memmap=False, lazy_load_hdus=True), threading.Lock())
            self.entries[path] = entry
            while len(self.entries) > self.capacity:
                _, (old, _) = self.entries.popitem(last=False)
                old.close()
            return entry

    def drop(self, path: str) -> None:
        with self.lock:
            entry = self.entries.pop(path, None)
        if entry is not None:
            entry[0].close()


_open_files = _OpenFiles()


def section_index(naxis: int, plane: int, rows, cols) -> tuple:
    """astropy section index of ``rows × cols`` in ``plane`` of an HDU with ``naxis`` axes."""
    return (0,) * (naxis - 3) + (plane, rows, cols) if naxis >= 3 else (rows, cols)


def read_region_astropy(path: str, hdu: int, plane: int, naxis: int,
                        y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Physical pixels of a region through astropy (tile-compressed HDUs, gzip-compressed files).

    Only the tiles overlapping the region are decompressed (``CompImageHDU.section``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdul, lock = _open_files.get(path)
            with lock:
                section = hdul[hdu].section
                return np.asarray(section[section_index(naxis, plane, slice(y0, y1), slice(x0, x1))])
        except Exception:
            # The file may have changed or vanished: do not keep a stale handle.
            _open_files.drop(path)
            raise


def read_plane_astropy(hdul, hdu: int, plane: int, naxis: int, rows=slice(None)) -> np.ndarray:
    """Rows ``rows`` (an int or a slice; default all) of one plane of an open HDUList, physical values."""
    return np.asarray(hdul[hdu].section[section_index(naxis, plane, rows, slice(None))])
