"""η sampling and masking: drawn in the graph, varying by step and rank, reproducible."""

import numpy as np
import pytest
import tensorflow as tf

from fitsae.models import masking


def draw(step, rank=0, seed=0, n=8, channels=16, **kw):
    key = masking.step_seed(seed, rank, step, "eta")
    return masking.sample_eta(key, n, channels, **kw).numpy()


def test_eta_changes_with_step_and_rank_inside_one_traced_function():
    # The seed notebooks' bug: η drawn once at trace time. Here one traced function must give
    # different η for different step/rank tensors and the same η for the same inputs.
    @tf.function
    def traced(step, rank):
        return masking.sample_eta(masking.step_seed(7, rank, step, "eta"), 4, 32)

    by_step = [int(traced(tf.constant(s, tf.int64), tf.constant(0, tf.int64))[0]) for s in range(20)]
    by_rank = [int(traced(tf.constant(3, tf.int64), tf.constant(r, tf.int64))[0]) for r in range(20)]
    assert len(set(by_step)) > 5 and len(set(by_rank)) > 5
    assert traced.experimental_get_tracing_count() == 1
    again = [int(traced(tf.constant(s, tf.int64), tf.constant(0, tf.int64))[0]) for s in range(20)]
    assert again == by_step


@pytest.mark.parametrize("distribution", ["uniform", "geometric", "log_uniform_ratio"])
def test_eta_stays_in_range_and_covers_it(distribution):
    etas = np.concatenate([draw(s, n=4, channels=10, distribution=distribution, per="example", eta_min=2)
                           for s in range(400)])
    assert etas.min() == 2 and etas.max() == 10
    assert etas.dtype == np.int32


def test_distributions_have_their_shapes():
    def sample(distribution):
        return np.concatenate([draw(s, n=64, channels=32, distribution=distribution, per="example",
                                    geometric_p=0.25) for s in range(100)])

    uniform, geometric, logu = sample("uniform"), sample("geometric"), sample("log_uniform_ratio")
    assert abs(uniform.mean() - 16.5) < 0.5
    # Truncated geometric with p = 0.25: mean ≈ 1/p = 4, P(η=1) = p.
    assert abs(geometric.mean() - 4.0) < 0.3 and abs((geometric == 1).mean() - 0.25) < 0.03
    # Log-uniform in η: P(η=1) = log 2 / log 33 ≈ 0.198, median ≈ sqrt(33) ≈ 5.7.
    assert abs((logu == 1).mean() - np.log(2) / np.log(33)) < 0.03
    assert 4 <= np.median(logu) <= 7


def test_per_batch_shares_one_eta_per_example_does_not():
    batch = draw(1, n=64, per="batch")
    example = draw(1, n=64, per="example")
    assert len(set(batch)) == 1 and len(set(example)) > 1


def test_mask_keeps_first_eta_units_and_channels():
    eta = tf.constant([1, 3], tf.int32)
    dense = masking.apply_mask(tf.ones([2, 5]), eta).numpy()
    np.testing.assert_array_equal(dense, [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    conv = masking.apply_mask(tf.ones([2, 3, 4, 5]), eta).numpy()
    assert conv[0, ..., :1].all() and not conv[0, ..., 1:].any()
    assert conv[1, ..., :3].all() and not conv[1, ..., 3:].any()
