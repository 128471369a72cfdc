"""The one exception type for FITS input fitsae cannot use.

Every message names the file, the HDU and the reason, because a user indexing ten thousand
files needs to find the one bad file without a debugger.
"""

from __future__ import annotations

from fitsae.errors import FitsaeError

__all__ = ["FitsInputError"]


class FitsInputError(FitsaeError, ValueError):
    """A FITS file or HDU fitsae cannot use; ``str(err)`` reads ``file X, HDU n: reason``.

    Parameters
    ----------
    path : str
        The file.
    hdu : int or None
        HDU index, or None when the problem concerns the whole file.
    reason : str
        What is wrong, phrased so the user knows what to fix.
    """

    def __init__(self, path: str, hdu: int | None, reason: str):
        self.path = str(path)
        self.hdu = hdu
        self.reason = reason
        where = f"file {self.path}" + (f", HDU {hdu}" if hdu is not None else "")
        super().__init__(f"{where}: {reason}")

    def as_record(self) -> dict:
        """The ``{path, hdu, reason}`` record written to ``*.rejected.jsonl``."""
        return {"path": self.path, "hdu": self.hdu, "reason": self.reason}
