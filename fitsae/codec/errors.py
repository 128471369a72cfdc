"""The codec's one error type: every expected failure of compress/decompress is one of these."""

from __future__ import annotations

from fitsae.errors import FitsaeError

__all__ = ["CodecError"]


class CodecError(FitsaeError, ValueError):
    """An input, container or model the codec cannot use; the message names it and says why."""
