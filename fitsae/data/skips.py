"""Tiles whose file went bad after indexing: skipped and counted, and a stream that cannot stall.

Contract: a file deleted, truncated or made unreadable after indexing does not stop training —
its tiles are dropped from the stream, counted (:attr:`SkipLedger.skipped`) and logged once per
file; but when a whole share of consecutive tiles could not be read, iterating the stream
(:func:`batches`) raises :class:`~fitsae.data.tiles.PipelineError` saying so, instead of waiting
forever for a batch that cannot come.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from fitsae.data.tiles import PipelineError

__all__ = ["SkipLedger", "stall_check", "batches"]

log = logging.getLogger("fitsae")

class SkipLedger:
    """Counts the tiles skipped so far and warns once per unreadable file (thread-safe)."""

    def __init__(self, manifest, tile_row):
        self.manifest, self.tile_row = manifest, tile_row
        self.skipped = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def report(self, tiles) -> None:
        """Tiles ``tiles`` were not read: count them, and name each newly failing file once."""
        with self._lock:
            self.skipped += len(tiles)
            for tile in tiles:
                row = self.manifest[int(self.tile_row[tile])]
                if row.path in self._warned:
                    continue
                self._warned.add(row.path)
                log.warning("skipping unreadable input %s HDU %d: %s; its tiles are skipped whenever they come "
                            "up (%d tile(s) skipped so far, see Pipeline.skipped)",
                            row.path, row.hdu, _diagnose(row), self.skipped)


def stall_check(dataset, first_seq: int, share: int, what: str, manifest, rank: int, size: int):
    """Fail, naming the problem, when a whole ``share`` of consecutive tiles could not be read.

    Unreadable tiles are dropped before batching, so if every file is gone no batch ever
    arrives and training would wait forever. Markers (``tile_id`` -1, ``_seq`` one past the end
    of an epoch's share) come after each epoch's tiles and cannot fail; at a marker, the
    distance to the last tile that was read is the run of consecutive skips.
    """
    import tensorflow as tf

    limit = max(int(share), 1)
    example = f"{manifest[0].path}" + (f" (and {len(manifest) - 1} other plane(s))" if len(manifest) > 1 else "")
    head = (f"fitsae data pipeline, rank {rank} of {size}: none of the last")
    tail = (f"tiles ({what}) could be read. The input files were deleted, moved, truncated or made "
            f"unreadable after indexing; the manifest lists {example}. Restore the files or index the "
            f"data again (fitsae index).")

    def step(last, element):
        marker = element["tile_id"] < 0
        skipped = element["_seq"] - last - 1
        check = tf.debugging.Assert(tf.logical_or(tf.logical_not(marker), skipped < limit), [head, skipped, tail])
        with tf.control_dependencies([check]):
            last = tf.where(marker, last, element["_seq"])
        return last, element

    return dataset.scan(tf.constant(first_seq - 1, tf.int64), step)


def batches(dataset):
    """Iterate ``dataset``; a stall (see :func:`stall_check`) raises :class:`PipelineError` with the
    plain-language message, as does any other error TensorFlow reports about the input data."""
    import tensorflow as tf

    iterator = iter(dataset)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as err:
            raise PipelineError(_stall_message(err.message) or err.message) from err
        yield batch


def _stall_message(error_text: str) -> str | None:
    """The plain-language part of the assertion :func:`stall_check` raises, or None.

    TensorFlow wraps an in-graph assertion in node names and brackets; only what the pipeline meant
    to say reaches the user.
    """
    match = re.search(r"\[(fitsae data pipeline[^\]]*)\] \[(\d+)\] \[(.*?\(fitsae index\)\.)\]", error_text, re.S)
    if match is None:
        return None
    return f"{match.group(1)} {match.group(2)} {match.group(3)}".replace("\\'", "'")


def _diagnose(row) -> str:
    """Best guess at why a manifest row cannot be read now (it could when it was indexed)."""
    try:
        size = os.stat(row.path).st_size
    except FileNotFoundError:
        return "the file no longer exists"
    except OSError as err:
        return f"cannot stat the file: {err.strerror or err}"
    if not os.access(row.path, os.R_OK):
        return "the file is not readable (permissions)"
    if size != row.file_size:
        return f"the file changed size since indexing ({row.file_size} → {size} bytes)"
    return "reading or decoding failed (the file changed since indexing?)"
