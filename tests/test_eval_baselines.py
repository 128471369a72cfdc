"""The classical baselines through astropy's real tile compression and libjxl, on tiny tiles."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from fitsae.evaluate import baselines
from fitsae.evaluate.baselines import Setting


def _field(seed: int, shape=(40, 36), sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    star = 400.0 * np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 5.0)
    return (100.0 + star + sigma * rng.normal(size=shape)).astype(np.float32)


def _rice_file(tile: np.ndarray, q: float, seed: int) -> bytes:
    hdu = fits.CompImageHDU(tile, compression_type="RICE_1", tile_shape=tile.shape, quantize_level=q,
                            quantize_method=1, dither_seed=seed)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def test_rice_and_jpegxl_decode_the_same_dithered_integers_within_half_a_step():
    tile = _field(0)
    for q in (0.5, 4.0):
        rice = baselines.roundtrip(tile, Setting("RICE_1", q), tile_id=6)
        jxl = baselines.roundtrip(tile, Setting("JPEG_XL", q), tile_id=6)
        # One tile, so one step Δ = ZSCALE: both decode to within Δ/2 of the input, to the very same pixels.
        ((_, zscale, _),) = baselines.rice_integers(_rice_file(tile, q, seed=7))
        assert np.abs(rice.decoded - tile).max() <= zscale / 2 * (1 + 1e-6)
        np.testing.assert_array_equal(jxl.decoded, rice.decoded)
        assert jxl.payload_bytes != rice.payload_bytes and jxl.table_bytes == rice.table_bytes


def test_dequantizing_ricess_heap_integers_reproduces_astropys_decoded_pixels_bit_for_bit():
    tile = _field(1, shape=(300, 270))  # 2 × 2 compression tiles of at most 256 × 256
    raw = baselines.roundtrip(tile, Setting("RICE_1", 2.0), tile_id=41)  # dither seed 42
    ints = baselines.rice_integers(_rice_file_tiled(tile, 2.0, seed=42))
    assert [k.shape for k, _, _ in ints] == [(256, 256), (256, 14), (44, 256), (44, 14)]
    rebuilt = np.block([[baselines.dequantize(k, s, z, i + 42) for i, (k, s, z) in enumerate(ints[:2])],
                        [baselines.dequantize(k, s, z, i + 44) for i, (k, s, z) in enumerate(ints[2:])]])
    np.testing.assert_array_equal(rebuilt.astype(np.float64), raw.decoded)
    # JPEG-XL on the same four tiles' integers decodes to the same pixels.
    np.testing.assert_array_equal(baselines.roundtrip(tile, Setting("JPEG_XL", 2.0), tile_id=41).decoded, raw.decoded)


def _rice_file_tiled(tile, q, seed):
    hdu = fits.CompImageHDU(tile, compression_type="RICE_1", tile_shape=(256, 256), quantize_level=q,
                            quantize_method=1, dither_seed=seed)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def test_lossless_rice_and_jpegxl_round_trip_int16_exactly():
    rng = np.random.default_rng(2)
    adu = np.clip(rng.poisson(300.0, size=(24, 20)) + rng.integers(0, 60000, size=(24, 20)) * (rng.random((24, 20)) < 0.02),
                  0, 65535).astype(np.uint16)
    physical = adu.astype(np.float64)
    stored = baselines.stored_integers(physical, 16, 1.0, 32768.0)
    assert stored.dtype == np.int16 and np.array_equal(stored.astype(np.int64) + 32768, adu)
    for codec in ("RICE_1", "JPEG_XL"):
        out = baselines.roundtrip(physical, Setting(codec, None), stored=(stored, 1.0, 32768.0))
        np.testing.assert_array_equal(out.decoded, physical)
        assert 0 < 8 * out.payload_bytes / adu.size < 16
    with pytest.raises(ValueError, match="not BITPIX=16 integers"):
        baselines.stored_integers(physical + 0.5, 16, 1.0, 32768.0)
    with pytest.raises(ValueError, match="stored integers"):
        baselines.roundtrip(physical, Setting("RICE_1", None))


def test_jpegxl_codes_integer_ranges_beyond_16_bits():
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 200, size=(16, 16)).astype(np.int32)
    wide[3, 4] = 300_000  # one saturated core: more than 16 bits above the background
    narrow = wide.copy()
    narrow[3, 4] = 200
    stored = (wide, 1.0, 0.0)
    out = baselines.roundtrip(wide.astype(np.float64), Setting("JPEG_XL", None), stored=stored)
    np.testing.assert_array_equal(out.decoded, wide)
    assert out.payload_bytes > baselines.roundtrip(narrow.astype(np.float64), Setting("JPEG_XL", None),
                                                   stored=(narrow, 1.0, 0.0)).payload_bytes


def test_file_bytes_are_the_whole_file_and_payload_the_heap():
    tile = _field(4)
    raw = _rice_file(tile, 4.0, seed=5)
    out = baselines.roundtrip(tile, Setting("RICE_1", 4.0), tile_id=4)
    assert out.file_bytes == len(raw)
    with fits.open(io.BytesIO(raw), disable_image_compression=True) as table:
        assert out.payload_bytes == table[1].header["PCOUNT"]
        start = table.fileinfo(1)["datLoc"]
    assert baselines.file_size(start, out.table_bytes, out.payload_bytes) == len(raw)
    jxl = baselines.roundtrip(tile, Setting("JPEG_XL", 4.0), tile_id=4)
    assert jxl.file_bytes == baselines.file_size(start, jxl.table_bytes, jxl.payload_bytes)


def test_hcompress_scale_is_relative_to_the_noise_as_fpack_takes_it():
    rng = np.random.default_rng(5)
    ints = np.rint(rng.normal(scale=8.0, size=(64, 64))).astype(np.int64)
    # Gaussian integers of σ = 8: cfitsio's estimate is ≈ 8, so s = 2.5 is an absolute scale ≈ 20.
    assert baselines._hcompress_scale(2.5, ints) == pytest.approx(20, abs=2)
    assert baselines._hcompress_scale(1.0, np.zeros((8, 8), np.int64)) == 0
    tile = _field(6, shape=(64, 64), sigma=5.0)
    errors = [np.sqrt(np.mean((baselines.roundtrip(tile, Setting("HCOMPRESS_1", 4.0, s)).decoded - tile) ** 2))
              for s in (0.5, 2.5, 8.0)]
    # fpack's -s 8 leaves about the noise itself; -s 0.5 a fraction of it.
    assert errors[0] < errors[1] < errors[2] and 0.5 * 5.0 < errors[2] < 1.5 * 5.0 and errors[0] < 0.3 * 5.0


def test_rice_error_follows_the_step_and_rate_grows_with_q():
    rng = np.random.default_rng(2)
    sigma = 3.0
    tile = (100.0 + sigma * rng.normal(size=(64, 64))).astype(np.float32)
    last_bits = 0.0
    for q in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        out = baselines.roundtrip(tile, Setting("RICE_1", q), tile_id=5)
        rmse_over_noise = np.sqrt(np.mean((out.decoded - tile) ** 2)) / sigma
        # Dithered quantization with step σ/q leaves uniform error: rms = step/√12.
        assert rmse_over_noise == pytest.approx(1.0 / (q * np.sqrt(12.0)), rel=0.15)
        bits = 8.0 * out.payload_bytes / tile.size
        assert last_bits < bits < 32.0
        last_bits = bits
        assert out.table_bytes > 0 and out.file_bytes > out.payload_bytes + out.table_bytes


def test_settings_that_cannot_run_say_why():
    assert baselines.applicable(Setting("HCOMPRESS_1", 4.0, 2.5), (3, 8), integer=False) is not None
    assert baselines.applicable(Setting("RICE_1", 4.0), (3, 8), integer=False) is None
    assert "integer input" in baselines.applicable(Setting("JPEG_XL", None), (8, 8), integer=False)
    assert baselines.applicable(Setting("JPEG_XL", None), (8, 8), integer=True) is None
    with pytest.raises(ValueError, match="2-D"):
        baselines.roundtrip(np.zeros((2, 4, 4)), baselines.DEFAULT_SETTINGS[0])
    labels = [s.label for s in baselines.DEFAULT_SETTINGS]
    assert len(set(labels)) == len(labels) and "JPEG-XL q=1" in labels and "RICE_1 lossless" in labels
