"""The one base of fitsae's own error types, so that a command line catches one thing.

Contract: every error the project raises on purpose for bad input, bad options or an unusable
run derives from :class:`FitsaeError` and carries a message meant for the user (file, HDU, tile,
reason); anything else reaching a CLI is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["FitsaeError"]


class FitsaeError(Exception):
    """An error whose message is for the user: a CLI prints it on one line and exits 2."""
