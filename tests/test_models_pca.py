"""A linear dense AE trained with η sampling recovers the ordered PCA subspaces (nested dropout)."""

import numpy as np
import pytest

from fitsae.config import from_dict
from fitsae.train.checkpoints import load_model
from fitsae.train.config import ExperimentConfig
from fitsae.train.loop import train
from fitsae.train.memory import ArrayData


def principal_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle between the column spans of ``a`` and ``b``."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


@pytest.mark.slow
def test_linear_dense_ae_recovers_pca_subspaces(tmp_path):
    rng = np.random.default_rng(0)
    dim = 16
    variances = np.array([12.0, 6.0, 3.0, 1.5] + [0.3] * (dim - 4))
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    data = (rng.normal(size=(4096, dim)) * np.sqrt(variances)) @ basis.T
    # Check the construction: the sample covariance has the intended top-4 eigenvectors.
    _, sample_vectors = np.linalg.eigh(np.cov(data.T))
    assert principal_angle_deg(sample_vectors[:, ::-1][:, :4], basis[:, :4]) < 5

    cfg = from_dict(ExperimentConfig, {
        "data": {"tile": 4, "batch_size": 128},
        "model": {"kind": "dense", "latent_channels": 6, "hidden": [], "activation": "linear"},
        "optimizer": {"learning_rate": 0.01, "schedule": "cosine", "final_fraction": 0.05},
        "train": {"steps": 4000, "log_every": 1000, "image_every": 0, "checkpoint_every": 4000,
                  "export": False, "progress": False},
    })
    result = train(cfg, tmp_path / "run", data=ArrayData(data.reshape(-1, 4, 4), 128, seed=1))
    assert result.exit_code == 0

    _, model, _ = load_model(tmp_path / "run")
    decoder = model.mean_decoder.get_layer("mean_decoder_head").kernel.numpy()  # (C, pixels)
    angles = [principal_angle_deg(decoder[:k].T, basis[:, :k]) for k in range(1, 5)]
    assert max(angles) < 10, angles
