"""Output locations: find out before the long work whether the results can be written.

An index of a night of frames or an evaluation takes minutes; learning only at the end that the
output directory is read-only (a shared data area, another user's run directory) wastes them, and
the ``PermissionError`` traceback that followed named neither what fitsae was writing nor why.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["unwritable", "unwritable_destination", "describe_os_error"]


def unwritable(directory) -> str | None:
    """Why files cannot be created in ``directory`` (created if missing), or None if they can.

    Tested by creating and removing a temporary file there: the permission bits alone do not say
    it (read-only mounts, ACLs, root-owned directories, root without CAP_DAC_OVERRIDE).
    """
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".fitsae-probe-"):
            pass
    except OSError as err:
        return f"{directory}: {err.strerror or err}"  # not the probe's random name
    return None


def unwritable_destination(directory) -> str | None:
    """Like :func:`unwritable`, but creates nothing: a missing ``directory`` is judged by its
    nearest existing ancestor (where it would be created), so a refused command leaves no trace."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return unwritable(path)


def describe_os_error(err: OSError) -> str:
    """``"<path>: <reason>"`` from an OSError, e.g. ``"out/m.jsonl: Permission denied"``."""
    reason = err.strerror or str(err)
    return f"{err.filename}: {reason}" if err.filename else reason
