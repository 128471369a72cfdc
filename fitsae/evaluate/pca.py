"""Streaming PCA baseline at the same number of kept values as the autoencoder.

Contract: at each η, PCA keeps as many values per tile as the AE: k = η components of the
flattened tile for a dense model (one latent vector per tile), k = η components of each
non-overlapping s×s patch for a fully-convolutional one of total stride s (η values per latent
position). It is fitted on *training* data only, streamed: each rank sums ``n``, ``Σx`` and
``XᵀX`` (float64) over its shard, one :func:`fitsae.distributed.allreduce_sum` combines them and
every rank diagonalises the same covariance, so the fit does not depend on the rank count.

Why: it answers "is the learned code better than the best *linear* code of the same size?"; the
top k eigenvectors are that code, with expected error the dropped eigenvalues (the tests' check).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitsae import distributed

__all__ = ["StreamingPCA", "PCAFit", "to_patches", "from_patches", "MAX_PCA_DIM"]

# XᵀX for d = 16384 is 2 GiB of float64 and its eigendecomposition takes minutes; beyond that a
# dense-model baseline is not what a user wants to wait for (use a fully-conv model there).
MAX_PCA_DIM = 16384


def to_patches(images: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Cut (B, H, W[, 1]) images into non-overlapping patches, one flattened patch per row.

    H and W must be multiples of the patch size (the caller crops first); rows are ordered
    image by image, then patch row, then patch column, so :func:`from_patches` inverts it.
    """
    x = np.asarray(images)
    if x.ndim == 4:
        x = x[..., 0]
    b, h, w = x.shape
    ph, pw = patch
    if h % ph or w % pw:
        raise ValueError(f"image {h}×{w} is not a multiple of the {ph}×{pw} PCA patch")
    x = x.reshape(b, h // ph, ph, w // pw, pw).transpose(0, 1, 3, 2, 4)
    return x.reshape(-1, ph * pw)


def from_patches(rows: np.ndarray, image_shape: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_patches`: rows back to (B, H, W) images."""
    h, w = image_shape
    ph, pw = patch
    x = np.asarray(rows).reshape(-1, h // ph, w // pw, ph, pw).transpose(0, 1, 3, 2, 4)
    return x.reshape(-1, h, w)


@dataclass(frozen=True)
class PCAFit:
    """A fitted PCA: mean vector, eigenvalues (descending) and eigenvectors as columns."""

    mean: np.ndarray
    eigenvalues: np.ndarray
    components: np.ndarray
    n: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def reconstruct(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Project rows onto the top ``k`` components and map back (k ≥ d is the identity)."""
        x = np.asarray(rows, dtype=np.float64) - self.mean
        v = self.components[:, : max(0, min(int(k), self.dim))]
        return (x @ v) @ v.T + self.mean

    def coefficients(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Projections (n, k) of rows onto the top ``k`` components."""
        x = np.asarray(rows, dtype=np.float64) - self.mean
        return x @ self.components[:, : max(0, min(int(k), self.dim))]

    def from_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """Rows from (n, k) coefficients of the top k components (the inverse of :meth:`coefficients`
        on the subspace)."""
        k = coefficients.shape[-1]
        return np.asarray(coefficients, np.float64) @ self.components[:, :k].T + self.mean

    def expected_mse(self, k: int) -> float:
        """Per-pixel MSE the fit predicts for its own distribution: Σ dropped eigenvalues / d."""
        return float(self.eigenvalues[int(k):].sum() / self.dim)


class StreamingPCA:
    """Accumulate ``n``, ``Σx``, ``XᵀX`` batch by batch; reduce over ranks; fit.

    Parameters
    ----------
    dim : int
        Length of each vector (pixels per patch or per flattened tile).
    """

    def __init__(self, dim: int) -> None:
        if dim > MAX_PCA_DIM:
            raise ValueError(
                f"PCA on {dim}-dimensional vectors needs a {dim}×{dim} covariance; the limit is "
                f"{MAX_PCA_DIM} (use smaller tiles, or a fully-convolutional model whose PCA "
                "baseline works on stride×stride patches)"
            )
        self.dim = int(dim)
        self.n = 0.0
        self.sum = np.zeros(self.dim)
        self.xtx = np.zeros((self.dim, self.dim))

    def update(self, rows: np.ndarray) -> None:
        x = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.xtx += x.T @ x

    def reduce(self) -> None:
        """Sum the statistics over all ranks (exact float64); afterwards every rank holds the totals."""
        packed = np.concatenate([[self.n], self.sum, self.xtx.ravel()])
        total = distributed.allreduce_sum(packed)
        self.n = float(total[0])
        self.sum = total[1:1 + self.dim]
        self.xtx = total[1 + self.dim:].reshape(self.dim, self.dim)

    def fit(self) -> PCAFit:
        """Eigendecomposition of the (population) covariance of everything accumulated so far."""
        if self.n < 1:
            raise ValueError("PCA has no training vectors to fit (empty training sample)")
        mean = self.sum / self.n
        cov = self.xtx / self.n - np.outer(mean, mean)
        cov = 0.5 * (cov + cov.T)  # symmetric to rounding, so eigh's real spectrum is exact-ish
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        # Tiny negative eigenvalues are rounding of a PSD matrix, not variance.
        values = np.clip(values[order], 0.0, None)
        vectors = vectors[:, order]
        # Fix each eigenvector's sign (largest |entry| positive) so fits on different rank
        # splits give identical components, not just identical subspaces.
        idx = np.argmax(np.abs(vectors), axis=0)
        signs = np.sign(vectors[idx, np.arange(self.dim)])
        signs[signs == 0] = 1.0
        return PCAFit(mean=mean, eigenvalues=values, components=vectors * signs, n=int(self.n))
