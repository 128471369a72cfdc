"""Native (TensorFlow) decode equals astropy's data bit for bit, for every BITPIX and scaling."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits

from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths
from fitsae.data.pipeline import Pipeline
from fitsae.io.native import decode_tf, decode_words_tf, physical_tf, swap_words_tf
from fitsae.io.scan import scan_file
from data_helpers import random_raw, write_raw_fits

# (BITPIX, header keywords, dtype astropy must produce)
CASES = [
    (8, {}, "uint8"),
    (8, {"BZERO": -128}, "int8"),
    (8, {"BSCALE": 0.5, "BZERO": 10.25}, "float32"),
    (8, {"BLANK": 255}, "float32"),
    (8, {"BLANK": 0}, "float32"),            # astropy ignores BLANK = 0
    (16, {}, "int16"),
    (16, {"BZERO": 32768}, "uint16"),
    (16, {"BZERO": 32768, "BLANK": -32768}, "uint16"),  # astropy applies no BLANK to unsigned
    (16, {"BSCALE": 0.1, "BZERO": -3.7}, "float32"),
    (16, {"BSCALE": 3.0}, "float32"),
    (16, {"BLANK": -32768}, "float32"),
    (16, {"BSCALE": 1e-3, "BZERO": 5.0, "BLANK": 7}, "float32"),
    (32, {}, "int32"),
    (32, {"BZERO": 2 ** 31}, "uint32"),
    (32, {"BSCALE": 1e-4, "BZERO": 1.0e5}, "float64"),
    (32, {"BLANK": -2147483648}, "float64"),
    (64, {}, "int64"),
    (64, {"BZERO": 2 ** 63}, "uint64"),
    (64, {"BSCALE": 2.5e-7, "BZERO": -11.0, "BLANK": 12345}, "float64"),
    (-32, {}, "float32"),
    (-32, {"BSCALE": 1.7, "BZERO": 0.3}, "float32"),
    (-32, {"BZERO": 1e-3}, "float32"),
    (-32, {"BSCALE": 2.0}, "float32"),       # -0.0 must stay -0.0 (no "+ 0")
    (-64, {}, "float64"),
    (-64, {"BSCALE": 0.3, "BZERO": -1e10}, "float64"),
]


def _ids(case):
    bitpix, kw, _ = case
    return f"{bitpix}-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "raw")


def _same_bits(native: np.ndarray, reference: np.ndarray) -> bool:
    reference = reference.astype(reference.dtype.newbyteorder("="))  # same values, native byte order
    assert native.dtype == reference.dtype, (native.dtype, reference.dtype)
    if reference.dtype.kind != "f":
        return np.array_equal(native, reference)
    nan = np.isnan(reference)
    ints = {4: np.uint32, 8: np.uint64}[reference.dtype.itemsize]
    return np.array_equal(np.isnan(native), nan) and np.array_equal(native[~nan].view(ints), reference[~nan].view(ints))


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_native_decode_is_bit_exact(tmp_path, case):
    bitpix, keywords, expected = case
    rng = np.random.default_rng(abs(bitpix) + len(keywords))
    raw = random_raw(bitpix, (13, 17), rng)
    if "BLANK" in keywords:
        raw.flat[5:9] = keywords["BLANK"]
    path = write_raw_fits(tmp_path / "a.fits", raw, bitpix, **keywords)
    reference = fits.getdata(path)
    assert reference.dtype.name == expected

    infos, rejected = scan_file(str(path))
    assert not rejected and len(infos) == 1
    info = infos[0]
    assert info.spec.dtype == expected
    content = tf.io.read_file(str(path))
    nbytes = raw.size * abs(bitpix) // 8
    native = decode_tf(tf.strings.substr(content, info.data_offset, nbytes), info.spec).numpy().reshape(raw.shape)
    assert _same_bits(native, reference)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] in ("float32", "float64", "uint16", "int16")],
                         ids=[_ids(c) for c in CASES if c[2] in ("float32", "float64", "uint16", "int16")])
def test_pipeline_with_no_normalization_returns_astropy_values(tmp_path, case):
    """End to end (index → Pipeline.evaluation): physical pixels as float32, NaN/Inf filled."""
    bitpix, keywords, _ = case
    rng = np.random.default_rng(7)
    raw = random_raw(bitpix, (2, 8, 8), rng)
    if "BLANK" in keywords:
        raw.flat[5:9] = keywords["BLANK"]
    path = write_raw_fits(tmp_path / "cube.fits", raw, bitpix, **keywords)
    cfg = DataConfig(tile=8, normalization="none", fill="zero", batch_size=4)
    manifest, rejected = index_paths([str(path)], cfg)
    assert not rejected and len(manifest) == 2
    batches = list(Pipeline(manifest, cfg).evaluation(4))
    got = np.concatenate([b["x"].numpy()[..., 0] for b in batches])
    reference = fits.getdata(path).astype(np.float64).astype(np.float32)
    reference[~np.isfinite(reference)] = 0.0
    np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_compiled_batch_decode_is_bit_exact(tmp_path, case):
    """The pipeline's batch path: little-endian words, byte swap compiled by XLA, then the physical rule."""
    bitpix, keywords, _ = case
    rng = np.random.default_rng(abs(bitpix) + 3 * len(keywords))
    raw = random_raw(bitpix, (2, 13, 17), rng)
    if "BLANK" in keywords:
        raw.flat[5:9] = keywords["BLANK"]
    path = write_raw_fits(tmp_path / "a.fits", raw, bitpix, **keywords)
    reference = fits.getdata(path)
    info = scan_file(str(path))[0][0]
    spec, nbytes = info.spec, raw[0].size * abs(bitpix) // 8
    content = tf.io.read_file(str(path))
    planes = tf.stack([tf.strings.substr(content, info.data_offset + k * nbytes, nbytes) for k in range(2)])
    words = decode_words_tf(planes, spec)
    if spec.mode == "scale":  # float arithmetic stays outside XLA (fused multiply-adds)
        native = physical_tf(tf.function(lambda w: swap_words_tf(w, spec), jit_compile=True)(words), spec)
    else:
        native = tf.function(lambda w: physical_tf(swap_words_tf(w, spec), spec), jit_compile=True)(words)
    assert _same_bits(native.numpy().reshape(raw.shape), reference)
