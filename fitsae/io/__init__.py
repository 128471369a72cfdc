"""FITS input: header scanning, native (big-endian) decode rules, the astropy fallback.

``fitsae.io`` knows FITS; it does not know about tiles, manifests or training. The data layer
(:mod:`fitsae.data`) builds on it.
"""

from fitsae.io.errors import FitsInputError
from fitsae.io.native import DecodeSpec, decode_spec, decode_tf
from fitsae.io.scan import ImageHDUInfo, scan_file

__all__ = ["FitsInputError", "DecodeSpec", "decode_spec", "decode_tf",
           "ImageHDUInfo", "scan_file"]
