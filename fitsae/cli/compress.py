"""``fitsae compress``: not available yet (the latent codec is still being built)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    print("fitsae compress: not available yet; use `fitsae evaluate` to score a run", file=sys.stderr)
    return 2
