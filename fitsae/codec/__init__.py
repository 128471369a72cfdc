"""The learned codec: FITS images ⇄ ``.fae.fits`` containers of entropy-coded latents.

Built on :mod:`fitsae.entropy` (frozen integer probability tables and the ANS coder,
``constriction``; a lower layer, since training's TensorBoard codes latents too). One concept per
module, data flowing down this list:

- :mod:`~fitsae.codec.artifact`: a run's checkpoint frozen with its tables, named by digest;
- :mod:`~fitsae.codec.encoder`: the one encoder (quantize, budget choice, code, decode) that
  ``compress`` and ``evaluate`` share;
- :mod:`~fitsae.codec.container`: the version-2 container (a FITS file, one table row per tile);
- :mod:`~fitsae.codec.planes`: reading, cutting and writing back image planes;
- :mod:`~fitsae.codec.quantize`, :mod:`~fitsae.codec.predict`, :mod:`~fitsae.codec.residual`,
  :mod:`~fitsae.codec.bounded`: the error-bounded and lossless modes (fpack's quantization, the
  float64 decoders as probability model, per-pixel coding, the plane encoder and tile decoder);
- :mod:`~fitsae.codec.files`: compress files / decompress containers;
- :mod:`~fitsae.codec.legacy`: decoding version-1 containers (float32 latents).
"""

from __future__ import annotations

from fitsae.codec.errors import CodecError
from fitsae.codec.files import DEFAULT_TILE, SELECTIONS, compress_files, decompress_file, parse_section

__all__ = ["CodecError", "DEFAULT_TILE", "SELECTIONS", "compress_files", "decompress_file", "parse_section"]
