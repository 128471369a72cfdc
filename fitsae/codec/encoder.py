"""The one encoder: tiles → quantized latents within a budget → coded bytes, and back to μ.

Contract: ``fitsae compress`` and ``fitsae evaluate`` both call :meth:`TileCodec.choose`, so
evaluation scores exactly what the codec writes: the same quantization, the same budget choice
(:mod:`fitsae.budget`) and the same coded bytes. η′ = 0 is one more candidate: μ = the tile's
lower median (a measured pixel value, stored as a big-endian float32), with σ the variance
decoder's at all-zero latents. A tile here is normalized pixels of a shape the model takes;
cutting planes into tiles and padding them is the caller's (:mod:`fitsae.codec.files`).

Why the median at η′ = 0 and not the decoder at zero latents: on a tile the model never learned
(saturated columns, a frame far from training) the decoder's output can be anything, and the
codec must never be worse than sending the median alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fitsae.budget import RunningBest, ladder
from fitsae.entropy import LatentTables, decode_latents, encode_latents

__all__ = ["BACKGROUND", "Choice", "TileCodec", "background_value", "mu_checksum"]

BACKGROUND = 0  # the η′ of a tile sent as its median alone
_BACKGROUND_DTYPE = np.dtype(">f4")


def mu_checksum(mu_phys: np.ndarray) -> str:
    """SHA-256 of a decoded tile's μ as float32: what the container stores and decoding checks."""
    return hashlib.sha256(np.ascontiguousarray(mu_phys, np.float32).tobytes()).hexdigest()


def background_value(data: bytes) -> float:
    """The median an η′ = 0 tile's payload holds (ValueError if it is not one float32)."""
    if len(data) != _BACKGROUND_DTYPE.itemsize:
        raise ValueError(f"a background-only tile holds {_BACKGROUND_DTYPE.itemsize} bytes, not {len(data)}")
    return float(np.frombuffer(data, _BACKGROUND_DTYPE)[0])


def _backgrounds(x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tile, the lower median of the measured pixels (of all when none is) in normalized units
    and, as it will be stored (float32, inside the measured range), in physical units.

    The lower median is a pixel's value, so it commutes with the increasing normalization.
    """
    norm, phys = np.empty(len(x)), np.empty(len(x))
    for i in range(len(x)):
        use = weight[i] if weight[i].any() else np.ones(weight[i].shape, bool)
        values = target[i][use]
        order = (values.size - 1) // 2
        norm[i] = np.partition(x[i][use], order)[order]
        stored = np.float64(np.float32(np.partition(values, order)[order]))
        phys[i] = np.clip(stored, values.min(), values.max())
    return norm, phys


@dataclass
class Choice:
    """Per tile of a batch at one budget: channels kept, integers (padded to the budget), μ."""

    eta: np.ndarray  # (N,) channels kept
    symbols: np.ndarray  # (N, ..., budget) int64, zero beyond each tile's η′
    mu: np.ndarray  # (N, H, W) normalized
    mu_phys: np.ndarray  # (N, H, W) physical units
    error: np.ndarray  # (N,) squared error in physical units over the measured pixels
    background: np.ndarray  # (N,) the tile's median, physical, as η′ = 0 stores it


class TileCodec:
    """A model plus its frozen tables: encode, choose η′, code and decode tiles."""

    def __init__(self, model, tables: LatentTables, refiner=None):
        self.model = model
        self.tables = tables
        self.channels = int(model.latent_channels)
        self.refiner = refiner  # a fitsae.codec.refine.Refiner: budgets' integers refined per tile

    # --- model I/O ---------------------------------------------------------------------------

    def latents(self, x: np.ndarray) -> np.ndarray:
        """All C latent channels of normalized tiles ``x`` (N, H, W), float32 (N, …, C).

        Tile by tile, like decoding (:meth:`_decode`): a latent near a rounding edge must round
        the same way whichever tiles were encoded with it.
        """
        import tensorflow as tf

        out = []
        eta = tf.constant([self.channels], tf.int32)
        for i in range(len(x)):
            tile = tf.convert_to_tensor(np.asarray(x[i:i + 1], np.float32)[..., None])
            out.append(np.asarray(self.model.encode(tile, eta), np.float32))
        return np.concatenate(out)

    def _full(self, k: np.ndarray) -> np.ndarray:
        kept = k.shape[-1]
        full = np.zeros(k.shape[:-1] + (self.channels,), np.float32)
        full[..., :kept] = self.tables.values(k)  # dropped channels are zero, as the mask made them
        return full

    def _decode(self, k: np.ndarray, variance: bool) -> np.ndarray:
        """Decode tile by tile: TensorFlow's float results can depend on the batch a tile shares
        (kernels chosen by batch size), and a decoder always sees one tile alone, so the encoder's
        choice, the evaluation and ``decompress`` all compute exactly the same μ."""
        import tensorflow as tf

        decoder = self.model.decode_var if variance else self.model.decode_mean
        full = self._full(k)
        return np.concatenate([np.asarray(decoder(tf.convert_to_tensor(full[i:i + 1])), np.float32)[..., 0]
                               for i in range(len(full))])

    def mean(self, k: np.ndarray) -> np.ndarray:
        """μ (N, H, W), normalized, from integers ``k`` (N, …, η′) of one η′ for all tiles."""
        return self._decode(k, variance=False)

    def log_variance(self, k: np.ndarray) -> np.ndarray:
        """log σ² (N, H, W), normalized, from integers ``k`` (N, …, η′)."""
        return self._decode(k, variance=True)

    def per_tile(self, symbols: np.ndarray, eta: np.ndarray, variance: bool = False) -> np.ndarray:
        """μ (or log σ²) of tiles whose η′ differ (each tile decoded alone, as always)."""
        return np.concatenate([self._decode(symbols[i:i + 1][..., :int(kept)], variance)
                               for i, kept in enumerate(eta)])

    # --- the budget choice -------------------------------------------------------------------

    def choose(self, x: np.ndarray, target: np.ndarray, to_physical: Callable[[np.ndarray], np.ndarray],
               budgets: list[int], measured: np.ndarray | None = None) -> tuple[dict, dict]:
        """Budget choices and plain masks for a batch of tiles, at every budget in one pass.

        Parameters
        ----------
        x : ndarray (N, H, W)
            Normalized tiles.
        target : ndarray (N, H, W)
            The tiles in physical units (what the error is measured against).
        to_physical : callable
            Normalized μ (N, H, W) → physical μ (N, H, W) for these tiles.
        budgets : list of int
            Budgets η to answer, increasing.
        measured : ndarray of bool (N, H, W), optional
            Pixels that count in the error (NaN/BLANK pixels do not); default all.

        Returns
        -------
        (dict, dict)
            ``{η: Choice}`` with the budget choice (the η′ with the smallest error among η′ = 0,
            the tile's median alone, and :func:`fitsae.budget.candidates`; ties keep the smaller
            η′), and ``{η: Choice}`` with the plain mask (exactly η channels, every tile).
            With a refiner, each budget's own integers (η′ = η, in both) are refined; the smaller
            candidates are the encoder's, rounded.
        """
        budgets = sorted(int(b) for b in budgets)
        z = self.latents(x)
        top = budgets[-1]
        steps = set(ladder(self.channels))
        decodes = sorted({k for k in steps if k <= top} | set(budgets))
        weight = np.ones(target.shape, bool) if measured is None else measured
        best = RunningBest()  # over the ladder; a budget off the ladder is tried on a copy
        bg_norm, bg_phys = _backgrounds(x, target, weight)
        flat = np.ones(x.shape[1:])
        mu0, mu0_phys = bg_norm[:, None, None] * flat, bg_phys[:, None, None] * flat
        error0 = np.sum(np.where(weight, (target - mu0_phys) ** 2, 0.0), axis=(1, 2))
        best.offer(BACKGROUND, error0, np.zeros(z.shape[:-1] + (top,), np.int64), mu0, mu0_phys)
        chosen, plain = {}, {}
        for kept in decodes:
            k = self._integers(x, z[..., :kept], refine=kept in budgets)
            mu = self.mean(k)
            mu_phys = to_physical(mu)
            error = np.sum(np.where(weight, (target - mu_phys) ** 2, 0.0), axis=(1, 2))
            padded = np.zeros(k.shape[:-1] + (top,), np.int64)
            padded[..., :kept] = k
            trial = best if kept in steps else best.copy()
            trial.offer(kept, error, padded, mu, mu_phys)
            if kept in budgets:
                plain[kept] = Choice(np.full(len(x), kept), padded[..., :kept], mu, mu_phys, error, bg_phys)
                eta, (symbols, c_mu, c_phys) = trial.eta.copy(), trial.arrays
                chosen[kept] = Choice(eta, symbols[..., :kept], c_mu, c_phys, trial.error.copy(), bg_phys)
        return chosen, plain

    def _integers(self, x: np.ndarray, z: np.ndarray, refine: bool) -> np.ndarray:
        """Integers of latents ``z`` (N, …, η′): rounded, or refined tile by tile
        (:mod:`fitsae.codec.refine`) at a budget when the codec has a refiner."""
        if not refine or self.refiner is None:
            return self.tables.symbols(z)
        return np.stack([self.refiner.symbols(x[i], z[i])[0] for i in range(len(x))])

    # --- bytes -------------------------------------------------------------------------------

    def code(self, symbols: np.ndarray, eta: int, background: float | None = None) -> tuple[bytes, int]:
        """One tile's first ``eta`` channels of integers (…, ≥ η) → (coded bytes, escapes); at
        η′ = 0 the bytes are its ``background`` (the median, :attr:`Choice.background`)."""
        if int(eta) == BACKGROUND:
            if background is None:
                raise ValueError("an η′ = 0 tile is coded from its background (the median), none given")
            return np.asarray(background, _BACKGROUND_DTYPE).tobytes(), 0
        return encode_latents(self.tables, np.asarray(symbols)[..., :int(eta)])

    def estimated_bits(self, k: np.ndarray) -> float:
        """The bits the tables predict for one tile's integers (…, η′); at η′ = 0 the median's 32."""
        return 8.0 * _BACKGROUND_DTYPE.itemsize if k.shape[-1] == BACKGROUND else self.tables.ideal_bits(k)

    def uncode(self, data: bytes, escapes: int, latent_shape: tuple, eta: int) -> np.ndarray:
        """Coded bytes → integers (1, …, η′) of one tile whose latent grid is ``latent_shape``
        (none at η′ = 0: its bytes are read by :func:`background_value`)."""
        if int(eta) == BACKGROUND:
            return np.zeros((1,) + tuple(latent_shape) + (0,), np.int64)
        return decode_latents(self.tables, data, escapes, tuple(latent_shape) + (int(eta),))[None]

    def latent_grid(self, height: int, width: int) -> tuple:
        """Latent positions of a tile of (height, width): (rows, cols) for conv, () for dense."""
        shape = self.model.latent_shape(height, width)
        return tuple(shape[:-1])
