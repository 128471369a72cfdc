"""The error-bounded and lossless modes in the rate–distortion table, beside RICE_1 and JPEG-XL.

:func:`bounded_rows` scores the codec's own plane encoder (:func:`fitsae.codec.bounded.encode_plane`:
the bytes are what ``fitsae compress --quantize-level q`` writes, and its decoder reproduces the
same pixels, checked by the per-tile checksum) at each quantize level, and RICE_1 and JPEG-XL (on
RICE's own dithered integers) at the same levels on the same planes, with astropy's 256² tiles.
Every row: bits/pixel of the coded payload, RMSE/σ_noise, ℓ∞/Δ (Δ each tile's step), the mean
error (bias) over σ_noise; integer planes add the lossless rows.
"""

from __future__ import annotations

import math

import numpy as np

from fitsae.evaluate.baselines import Setting, _dither_seed, _rice, _tiles, rice_integers, roundtrip, stored_integers

__all__ = ["LEVELS", "bounded_rows"]

LEVELS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class _Tally:
    def __init__(self):
        self.bytes = self.pixels = self.n = 0
        self.sq = self.sum = self.noise_sq = 0.0
        self.worst = 0.0

    def add(self, error: np.ndarray, delta: np.ndarray, noise: float):
        ok = np.isfinite(error)
        error, delta = error[ok], np.broadcast_to(delta, ok.shape)[ok]
        self.sq += float(np.sum(error ** 2))
        self.sum += float(np.sum(error))
        self.noise_sq += noise ** 2 * error.size
        self.n += int(error.size)
        if error.size:
            self.worst = max(self.worst, float(np.max(np.abs(error) / delta)))

    def row(self, codec: str, level) -> dict:
        sigma = math.sqrt(self.noise_sq / self.n) if self.n else math.nan
        return {"codec": codec, "quantize_level": level, "lossless": level is None,
                "bits_per_pixel": 8.0 * self.bytes / self.pixels if self.pixels else math.nan,
                "rmse_over_noise": math.sqrt(self.sq / self.n) / sigma if self.n else math.nan,
                "linf_over_delta": self.worst, "mean_bias_over_noise": self.sum / self.n / sigma if self.n else math.nan,
                "pixels": self.pixels}


def _fitsae(frozen, rows, quant, eta: int, tile: int, family: str) -> _Tally:
    from fitsae.codec.bounded import encode_plane
    from fitsae.codec.encoder import TileCodec
    from fitsae.codec.planes import Geometry
    from fitsae.codec.predict import Predictor

    codec, predictor = TileCodec(frozen.model, frozen.tables), _predictor(frozen, Predictor)
    geometry = Geometry.of(frozen.model, tile)
    tally = _Tally()
    for i, row in enumerate(rows):
        plane, stats = encode_plane(codec, predictor, frozen.cfg.data, geometry, row, i, eta, "best", quant, family)
        tally.bytes += plane.payload_bytes
        tally.pixels += row.height * row.width
        tally.sq += stats["squared_error"]
        tally.sum += stats["error_sum"]
        tally.n += stats["measured"]
        tally.noise_sq += row.noise ** 2 * stats["measured"]
        tally.worst = max(tally.worst, stats["worst_over_delta"])
    return tally


_PREDICTORS: dict = {}


def _predictor(frozen, make):
    if frozen.digest not in _PREDICTORS:
        _PREDICTORS[frozen.digest] = make(frozen)
    return _PREDICTORS[frozen.digest]


def _baseline(rows, setting: Setting) -> _Tally:
    from fitsae.codec.planes import read_plane

    tally = _Tally()
    for row in rows:
        x = read_plane(row).pixels
        stored = None
        if row.bitpix > 0 and setting.lossless:
            stored = (stored_integers(x, row.bitpix, row.bscale, row.bzero), row.bscale, row.bzero)
        result = roundtrip(np.nan_to_num(x, nan=row.median), setting, stored=stored)
        delta = np.ones(x.shape) * (row.bscale if setting.lossless else np.nan)
        if not setting.lossless:  # RICE's own steps (JPEG-XL codes the same integers)
            raw = _rice(np.ascontiguousarray(np.nan_to_num(x, nan=row.median), np.float32).tobytes(), x.shape,
                        setting.quantize_level, _dither_seed(0))
            for (_, zscale, _), where in zip(rice_integers(raw), _tiles(x.shape), strict=True):
                delta[where] = zscale
        tally.bytes += result.payload_bytes
        tally.pixels += x.size
        tally.add(result.decoded - x, delta, row.noise)
    return tally


def bounded_rows(frozen, rows, levels=LEVELS, eta: int | None = None, tile: int = 256, family: str = "laplace",
                 baselines: bool = True, seed: int = 1) -> list[dict]:
    """Rows of the error-bounded comparison over manifest ``rows`` (held-out planes).

    Parameters
    ----------
    frozen : fitsae.codec.artifact.FrozenModel
    rows : list of manifest rows
    levels : quantize levels q (Δ = σ_noise/q)
    eta : budget of latent channels (default all)
    baselines : also RICE_1 and JPEG-XL at the same levels (and lossless on integer planes)
    """
    from fitsae.codec.quantize import Quantization

    eta = int(eta or frozen.model.latent_channels)
    integer = all(r.bitpix > 0 for r in rows)
    out = []
    for q in list(levels) + ([None] if integer else []):
        quant = Quantization("lossless", seed=seed) if q is None else Quantization("quantize", level=q, seed=seed)
        out.append(_fitsae(frozen, rows, quant, eta, tile, family).row("fitsae", q))
        if baselines:
            for codec in ("RICE_1", "JPEG_XL"):
                out.append(_baseline(rows, Setting(codec, q)).row(codec, q))
    return out
