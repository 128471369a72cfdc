"""The latent coder: frozen integer tables and constriction's ANS, without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from fitsae.entropy import PRECISION, CodingError, decode_latents, encode_latents, tables_from_latents


def _tables(seed: int = 0, channels: int = 3):
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(20000, channels)) * np.array([1.0, 5.0, 0.2])[:channels]
    return tables_from_latents(sample), rng


def test_every_table_is_a_distribution_at_the_coders_precision():
    tables, _ = _tables()
    for freqs in tables.freqs:
        assert freqs.sum() == 1 << PRECISION and freqs.min() >= 1


def test_integers_round_trip_exactly_including_escapes_far_outside_the_support():
    tables, rng = _tables()
    k = tables.symbols(rng.normal(size=(7, 9, 3)) * np.array([1.0, 5.0, 0.2]))
    k[2, 3, 0] = tables.low[0] - 5000  # a bright star's latent, far below the support
    k[4, 1, 2] = 2 ** 30
    data, escapes = encode_latents(tables, k)
    assert escapes >= 2
    np.testing.assert_array_equal(decode_latents(tables, data, escapes, k.shape), k)


def test_the_first_channels_decode_alone():
    """A tile keeps η′ ≤ C channels: coding the first two must not need the third's table."""
    tables, rng = _tables()
    k = tables.symbols(rng.normal(size=(50, 2)))
    data, escapes = encode_latents(tables, k)
    np.testing.assert_array_equal(decode_latents(tables, data, escapes, k.shape), k)


def test_coded_size_agrees_with_the_tables_estimate():
    """Bytes written vs −Σ log₂ P: ANS costs a few words per stream, not a per-symbol overhead."""
    tables, rng = _tables(seed=1)
    k = tables.symbols(rng.normal(size=(64, 64, 3)) * np.array([1.0, 5.0, 0.2]))
    data, _ = encode_latents(tables, k)
    estimate = tables.ideal_bits(k)
    assert 8 * len(data) == pytest.approx(estimate, rel=0.01)
    assert 8 * len(data) >= estimate


def test_altered_bytes_do_not_decode_to_the_same_latents():
    tables, rng = _tables(seed=2)
    k = tables.symbols(rng.normal(size=(40, 3)))
    data, escapes = encode_latents(tables, k)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x10
    try:
        decoded = decode_latents(tables, bytes(flipped), escapes, k.shape)
    except CodingError:
        return
    assert not np.array_equal(decoded, k)


def test_a_stream_too_short_for_its_escapes_is_an_error():
    tables, _ = _tables()
    with pytest.raises(CodingError, match="escaped values"):
        decode_latents(tables, b"\x00" * 6, 3, (2, 3))


def test_tables_are_data_their_digest_depends_only_on_the_sample():
    a, _ = _tables(seed=3)
    b, _ = _tables(seed=3)
    c, _ = _tables(seed=4)
    assert a.digest() == b.digest() != c.digest()


def test_tables_from_summed_histograms_equal_the_tables_of_all_latents():
    """Ranks fit identical tables by adding fixed-layout histograms (β-VAE evaluation under MPI)."""
    from fitsae.entropy import latent_histograms, tables_from_histograms

    rng = np.random.default_rng(3)
    z = rng.standard_t(3, size=(5000, 2)) * np.array([2.0, 0.3])
    z[17, 0] = 1e7  # beyond the histogram's window: counted, and escaped
    step = np.array([0.5, 0.05])
    k = np.rint(z / step).astype(np.int64)
    parts = latent_histograms(k[:1234]) + latent_histograms(k[1234:])
    whole = tables_from_latents(z, step)
    assert tables_from_histograms(step, parts).digest() == whole.digest()
    np.testing.assert_array_equal(decode_latents(whole, *encode_latents(whole, k), k.shape), k)
