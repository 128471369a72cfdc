"""PCA baseline: streamed fit, known-covariance error, patches, and the 2-rank fit under mpirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fitsae.evaluate.pca import MAX_PCA_DIM, StreamingPCA, from_patches, to_patches


def _known_covariance_data(n: int, seed: int, sample_seed: int = 0):
    """Gaussian vectors with covariance Q diag(λ) Qᵀ and a non-zero mean; returns (X, λ, mean).

    ``seed`` fixes the distribution (Q, mean), ``sample_seed`` the draws from it.
    """
    rng = np.random.default_rng(seed)
    dim = 12
    eigenvalues = np.array([9.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.6, 0.4, 0.25, 0.1, 0.05, 0.02])
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mean = rng.normal(size=dim) * 3.0
    x = np.random.default_rng([seed, sample_seed]).normal(size=(n, dim)) * np.sqrt(eigenvalues) @ q.T + mean
    return x, eigenvalues, mean


def _fit(x, chunks):
    pca = StreamingPCA(x.shape[1])
    for part in np.array_split(x, chunks):
        pca.update(part)
    pca.reduce()
    return pca.fit()


def test_mse_equals_sum_of_dropped_eigenvalues_on_known_covariance():
    train, true_eigenvalues, _ = _known_covariance_data(200_000, seed=1, sample_seed=1)
    fresh, _, _ = _known_covariance_data(50_000, seed=1, sample_seed=2)
    fit = _fit(train, chunks=7)
    # Held-out vectors: per-pixel MSE = Σ dropped true eigenvalues / d, to sampling error.
    dim = train.shape[1]
    for k in range(dim + 1):
        mse = np.mean((fit.reconstruct(fresh, k) - fresh) ** 2)
        expected = true_eigenvalues[k:].sum() / dim
        assert mse == pytest.approx(expected, rel=0.03, abs=1e-9), k
    # On its own training data the identity holds to rounding, for the fitted eigenvalues.
    for k in (0, 1, 4, 11):
        mse_train = np.mean((fit.reconstruct(train, k) - train) ** 2)
        assert mse_train == pytest.approx(fit.expected_mse(k), rel=1e-8, abs=1e-12)
    assert fit.eigenvalues == pytest.approx(true_eigenvalues, rel=0.03)
    assert np.all(np.diff(fit.eigenvalues) <= 0)


def test_streamed_fit_does_not_depend_on_batching():
    x, _, _ = _known_covariance_data(5_000, seed=3)
    one, many = _fit(x, 1), _fit(x, 13)
    np.testing.assert_allclose(many.eigenvalues, one.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(many.components, one.components, atol=1e-8)
    np.testing.assert_allclose(many.mean, one.mean, rtol=1e-12)


def test_patches_round_trip_and_order():
    images = np.arange(2 * 8 * 12, dtype=np.float32).reshape(2, 8, 12, 1)
    rows = to_patches(images, (4, 4))
    assert rows.shape == (2 * 2 * 3, 16)
    # first patch is the top-left 4×4 block of the first image
    np.testing.assert_array_equal(rows[0].reshape(4, 4), images[0, :4, :4, 0])
    np.testing.assert_array_equal(from_patches(rows, (8, 12), (4, 4)), images[..., 0])
    with pytest.raises(ValueError, match="not a multiple"):
        to_patches(images, (3, 3))


def test_refuses_covariance_too_large_to_hold():
    with pytest.raises(ValueError, match="fully-convolutional"):
        StreamingPCA(MAX_PCA_DIM + 1)


def test_empty_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="no training vectors"):
        StreamingPCA(4).fit()


_MPI_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from fitsae import distributed
    from fitsae.evaluate.pca import StreamingPCA

    w = distributed.init_workers(configure_tensorflow=False)
    x = np.load(sys.argv[1])
    mine = np.array_split(x, w.size)[w.rank]   # each rank streams only its shard
    pca = StreamingPCA(x.shape[1])
    for part in np.array_split(mine, 3):
        pca.update(part)
    pca.reduce()
    fit = pca.fit()
    if w.rank == 0:
        json.dump({"size": w.size, "backend": w.backend, "n": fit.n,
                   "eigenvalues": fit.eigenvalues.tolist(), "components": fit.components.tolist(),
                   "mean": fit.mean.tolist()}, open(sys.argv[2], "w"))
    """
)


def _mpirun() -> list[str]:
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]


@pytest.mark.mpi
def test_two_rank_fit_equals_single_process_fit(tmp_path: Path):
    x, _, _ = _known_covariance_data(4_001, seed=5)  # odd count: the shards differ in length
    data = tmp_path / "x.npy"
    np.save(data, x)
    script = tmp_path / "fit.py"
    script.write_text(_MPI_SCRIPT)
    out = tmp_path / "fit.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", FITSAE_THREADS="1")
    proc = subprocess.run(
        _mpirun() + [sys.executable, str(script), str(data), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(out.read_text())
    assert got["size"] == 2 and got["backend"] == "horovod" and got["n"] == len(x)
    single = _fit(x, 1)
    np.testing.assert_allclose(got["eigenvalues"], single.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(got["mean"], single.mean, rtol=1e-12)
    np.testing.assert_allclose(np.array(got["components"]), single.components, atol=1e-8)
