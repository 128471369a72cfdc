"""The codec's one error type: every expected failure of compress/decompress is one of these.

The CLI turns a :class:`CodecError` into its message and exit status 2; anything else escaping
the codec is a bug.
"""

from __future__ import annotations

from fitsae.errors import FitsaeError

__all__ = ["CodecError"]


class CodecError(FitsaeError, ValueError):
    """An input, container or model the codec cannot use; the message names it and says why."""
