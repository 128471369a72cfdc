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


SUBNORMALS = np.array([1e-42, -1e-40, -0.0, 0.0, 3e-39, np.finfo(np.float32).tiny, 1.0, -2.5], np.float32)


@pytest.mark.parametrize("vectorize", [True, False], ids=["batch-decode", "per-tile-decode"])
def test_no_normalization_passes_float32_pixels_bit_for_bit(tmp_path, monkeypatch, vectorize):
    """Subnormals and −0.0 survive: with normalization "none" the pipeline does no arithmetic on
    float32 pixels (TensorFlow's CPU kernels flush subnormals to zero in an (x − 0) / 1)."""
    monkeypatch.setattr(Pipeline, "vectorize", vectorize)
    raw = np.resize(SUBNORMALS, (2, 8, 8)).astype(np.float32)
    path = write_raw_fits(tmp_path / "tiny.fits", raw, -32)
    cfg = DataConfig(tile=8, normalization="none", batch_size=2)
    manifest, _ = index_paths([str(path)], cfg)
    pipe = Pipeline(manifest, cfg)
    reference = fits.getdata(path).astype(np.float32).view(np.uint32)
    (batch,) = list(pipe.evaluation(2))
    np.testing.assert_array_equal(batch["x"].numpy()[..., 0].view(np.uint32), reference)
    training = next(iter(pipe.training()))
    order = training["tile_id"].numpy()
    np.testing.assert_array_equal(training["x"].numpy()[..., 0].view(np.uint32), reference[order])


def test_float64_pixels_are_rounded_to_float32_with_subnormals_flushed(tmp_path):
    """What the README states for data decoded as float64: float32 rounding, sign kept, and values
    below float32's smallest normal flushed to ±0."""
    path = write_raw_fits(tmp_path / "tiny64.fits", np.resize(SUBNORMALS, (8, 8)).astype(np.float64), -64)
    cfg = DataConfig(tile=8, normalization="none", batch_size=1)
    manifest, _ = index_paths([str(path)], cfg)
    (batch,) = list(Pipeline(manifest, cfg).evaluation(1))
    got = batch["x"].numpy()[0, ..., 0].ravel()[:len(SUBNORMALS)]
    expected = np.where(np.abs(SUBNORMALS) < np.finfo(np.float32).tiny, np.copysign(0.0, SUBNORMALS), SUBNORMALS)
    np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))
