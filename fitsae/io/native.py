"""Native decode of uncompressed FITS image data in TensorFlow, bit-exact with astropy.

Contract: for the same header values and bytes, :func:`decode_tf` and :func:`physical_tf` give
the dtype and the values ``astropy.io.fits.getdata`` gives (``_uint=True``), bit for bit:
big-endian ``BITPIX`` 8/16/32/64/−32/−64 words, the physical value ``BZERO + BSCALE·raw``, and
integer ``BLANK`` pixels as NaN where astropy makes them NaN. :func:`decode_spec` states
astropy's rules, which this module follows even where they surprise.

Why: the training pipeline decodes inside ``tf.data`` (no GIL, no Python per image) and must
still give the numbers a user sees with astropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RAW_DTYPES", "DecodeSpec", "decode_spec", "decode_tf", "decode_words_tf", "swap_words_tf", "physical_tf",
           "SUPPORTED_BITPIX"]

RAW_DTYPES = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
# Integers of each pixel's width that ``tf.io.decode_raw`` can produce (it has no uint32/uint64).
WORD_DTYPES = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "int32", -64: "int64"}
SUPPORTED_BITPIX = tuple(RAW_DTYPES)

# Physical dtypes that float32 holds exactly: pipelines made only of these compute in float32.
FLOAT32_EXACT = ("uint8", "int8", "int16", "uint16", "float32")


@dataclass(frozen=True)
class DecodeSpec:
    """How raw big-endian bytes of one HDU become astropy's physical array.

    ``mode`` is ``"raw"``, ``"unsigned"`` or ``"scale"`` (see the module docstring); ``dtype`` is
    astropy's resulting dtype name; ``blank`` is the BLANK value astropy actually applies (None
    when it does not).
    """

    bitpix: int
    mode: str
    dtype: str
    bscale: float
    bzero: float
    blank: int | None

    @property
    def raw_dtype(self) -> str:
        return RAW_DTYPES[self.bitpix]

    @property
    def itemsize(self) -> int:
        return abs(self.bitpix) // 8

    @property
    def key(self) -> tuple:
        """What the decode graph depends on beyond per-image scalars (one TF branch per key)."""
        return (self.bitpix, self.mode, self.dtype, self.blank is not None)


def decode_spec(bitpix: int, bscale: float = 1.0, bzero: float = 0.0, blank: int | None = None) -> DecodeSpec:
    """Decide astropy's decode rule for these header values.

    The rules, from ``astropy.io.fits.hdu.image`` (``_uint=True``):

    - no BSCALE/BZERO and no BLANK: the raw dtype (``uint8``, ``int16``, ... ``float64``);
    - pseudo-unsigned integers, ``BSCALE = 1`` and ``BZERO = 2**(BITPIX-1)`` (16/32/64):
      ``uint16``/``uint32``/``uint64``; ``BITPIX = 8`` with ``BZERO = -128``: ``int8``. Computed
      as a flip of the sign bit (what astropy's wrap-around subtraction amounts to). astropy does
      not apply BLANK on this path, so neither do we;
    - otherwise integers become ``float32`` (BITPIX 8, 16) or ``float64`` (32, 64); the product
      with BSCALE is taken only when ``BSCALE != 1`` and the sum with BZERO only when
      ``BZERO != 0``, each in that output dtype (astropy works in place with the Python scalar
      converted to the array's dtype), and pixels whose raw value equals a non-zero BLANK become
      NaN (astropy tests ``if self._blank:``, so ``BLANK = 0`` is ignored). Floats keep their
      dtype and ignore BLANK.
    """
    if bitpix not in RAW_DTYPES:
        raise ValueError(f"BITPIX={bitpix} is not one of {list(RAW_DTYPES)}")
    if bscale == 1 and bitpix > 8 and bzero == 1 << (bitpix - 1):
        return DecodeSpec(bitpix, "unsigned", f"uint{bitpix}", 1.0, float(bzero), None)
    if bscale == 1 and bitpix == 8 and bzero == -128:
        return DecodeSpec(bitpix, "unsigned", "int8", 1.0, -128.0, None)
    if bitpix < 0:
        if bscale == 1 and bzero == 0:
            return DecodeSpec(bitpix, "raw", RAW_DTYPES[bitpix], 1.0, 0.0, None)
        return DecodeSpec(bitpix, "scale", RAW_DTYPES[bitpix], float(bscale), float(bzero), None)
    if bscale == 1 and bzero == 0 and blank is None:
        return DecodeSpec(bitpix, "raw", RAW_DTYPES[bitpix], 1.0, 0.0, None)
    out = "float32" if bitpix <= 16 else "float64"
    return DecodeSpec(bitpix, "scale", out, float(bscale), float(bzero), int(blank) if blank else None)


def decode_tf(raw, spec: DecodeSpec, bscale=None, bzero=None, blank=None):
    """Decode a ``tf.string`` of big-endian pixels into astropy's physical values (1-D tensor).

    Parameters
    ----------
    raw : tf.Tensor
        Scalar string holding whole pixels of one HDU (any number of them).
    spec : DecodeSpec
        Fixes the graph (BITPIX, mode, output dtype, whether BLANK applies).
    bscale, bzero, blank : tf.Tensor, optional
        Per-image scalars (float64, float64, int64) overriding ``spec``'s values, so one traced
        graph serves every image sharing ``spec.key``.
    """
    import tensorflow as tf

    values = tf.io.decode_raw(raw, tf.as_dtype(spec.raw_dtype), little_endian=False)
    return physical_tf(values, spec, bscale, bzero, blank)


def decode_words_tf(raw, spec: DecodeSpec, fixed_length: int | None = None):
    """Bytes → integers of the pixel width, still in FITS (big-endian) byte order: a plain copy.

    Together with :func:`swap_words_tf` this replaces ``decode_raw(..., little_endian=False)``,
    which reverses the bytes of one element at a time (far slower: docs/measurements.md). With
    ``fixed_length`` every string is cut or zero-padded to that many bytes, so strings of
    different lengths (whole files with different trailers) decode as one batch.
    """
    import tensorflow as tf

    return tf.io.decode_raw(raw, tf.as_dtype(WORD_DTYPES[spec.bitpix]), fixed_length=fixed_length)


def swap_words_tf(words, spec: DecodeSpec):
    """Big-endian words (from :func:`decode_words_tf`) → raw pixel values of ``spec.raw_dtype``.

    Only integer shifts, masks and bitcasts, so the result is exact whatever compiles it. It is
    meant to run under XLA (``tf.function(jit_compile=True)``), which fuses the ops into one pass
    over memory; as separate TensorFlow ops each would be a pass of its own.
    """
    import tensorflow as tf

    bits = abs(spec.bitpix)
    if bits > 8:
        unsigned = tf.as_dtype(f"uint{bits}")
        u = tf.bitcast(words, unsigned)
        width = bits // 2
        while width >= 8:
            # Swap adjacent groups of `width` bits: halves, then quarters, ... then bytes.
            mask = tf.constant(((1 << bits) - 1) // ((1 << 2 * width) - 1) * ((1 << width) - 1), unsigned)
            u = tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(tf.bitwise.right_shift(u, width), mask),
                                      tf.bitwise.left_shift(tf.bitwise.bitwise_and(u, mask), width))
            width //= 2
        words = u
    return tf.bitcast(words, tf.as_dtype(spec.raw_dtype))


def physical_tf(values, spec: DecodeSpec, bscale=None, bzero=None, blank=None):
    """Raw pixel values (native byte order) → astropy's physical values; arguments as :func:`decode_tf`.

    The ``scale`` mode multiplies and adds in floating point: never compile it with XLA, which
    contracts ``x * bscale + bzero`` into one fused multiply-add and so differs from astropy in
    the last bit. The other modes are integer-only and safe anywhere.
    """
    import tensorflow as tf

    out_dtype = tf.as_dtype(spec.dtype)
    raw_dtype = tf.as_dtype(spec.raw_dtype)
    if spec.mode == "raw":
        return values
    if spec.mode == "unsigned":
        # Adding 2**(bits-1) modulo 2**bits is flipping the sign bit.
        sign = np.uint8(0x80) if spec.bitpix == 8 else np.iinfo(spec.raw_dtype).min
        flipped = tf.bitwise.bitwise_xor(values, tf.constant(sign, raw_dtype))
        return tf.bitcast(flipped, out_dtype)
    bscale = tf.constant(spec.bscale, tf.float64) if bscale is None else tf.cast(bscale, tf.float64)
    bzero = tf.constant(spec.bzero, tf.float64) if bzero is None else tf.cast(bzero, tf.float64)
    data = tf.cast(values, out_dtype) if spec.bitpix > 0 else values
    # Separate ops, each rounded to out_dtype, exactly like astropy's in-place numpy arithmetic;
    # skipping a *1 or +0 matters for -0.0 (astropy skips them too).
    data = tf.cond(tf.not_equal(bscale, 1.0), lambda: data * tf.cast(bscale, out_dtype), lambda: data)
    data = tf.cond(tf.not_equal(bzero, 0.0), lambda: data + tf.cast(bzero, out_dtype), lambda: data)
    if spec.blank is not None:
        blank = tf.constant(spec.blank, tf.int64) if blank is None else tf.cast(blank, tf.int64)
        is_blank = tf.equal(tf.cast(values, tf.int64), blank)
        data = tf.where(is_blank, tf.constant(np.nan, out_dtype), data)
    return data
