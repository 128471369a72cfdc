"""The error-bounded and lossless modes in the rate–distortion table, beside RICE_1 and JPEG-XL.

:func:`bounded_rows` scores the codec's own plane encoder (:func:`fitsae.codec.bounded.encode_plane`)
at each quantize level, with the planes of each file numbered and dithered as ``fitsae compress
--quantize-level q --int-to-float --dither-seed SEED --eta ETA --tile TILE`` numbers them, so a
row's bytes are the payload that command writes for the same files (the table rows' coded bytes
and masks). ``--int-to-float``: integer planes are quantized at the requested step, as RICE_1's
rows quantize them, so equal q means equal steps on integer images too. Beside
it, at the same levels on the same planes: RICE_1 with astropy's 256² tiles, and JPEG-XL lossless
on RICE's own dithered integers (:mod:`fitsae.evaluate.baselines`); integer planes add the
lossless rows. HCOMPRESS_1 is not among them: its scale makes it lossy beyond the quantization,
so it has no ℓ∞ bound to be compared at.

Every row: bits per pixel of the payload (headers excluded), RMSE/σ_noise, ℓ∞/Δ (Δ each tile's
own step: the codec's, or cfitsio's ZSCALE), the mean error (bias) over σ_noise with its standard
error, and the median step over σ_noise — the codecs estimate σ_noise each their own way, so
"equal q" is equal only as far as these medians agree.
"""

from __future__ import annotations

import math

import numpy as np

from fitsae.evaluate.baselines import Setting, rice_steps, roundtrip, stored_integers

__all__ = ["LEVELS", "CODECS", "bounded_rows"]

LEVELS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CODECS = ("fitsae", "RICE_1", "JPEG_XL")


class _Tally:
    """Bytes, pixels and error sums of one codec at one level over several planes."""

    def __init__(self):
        self.bytes = self.pixels = self.n = 0
        self.sq = self.sum = self.noise_sq = 0.0
        self.worst = 0.0
        self.steps: list[np.ndarray] = []  # Δ/σ_noise of every pixel

    def add(self, error: np.ndarray, delta: np.ndarray, noise: float):
        ok = np.isfinite(error)
        error, delta = error[ok], np.broadcast_to(delta, ok.shape)[ok]
        self.add_sums(float(np.sum(error ** 2)), float(np.sum(error)), int(error.size), noise)
        if error.size:
            self.worst = max(self.worst, float(np.max(np.abs(error) / delta)))

    def add_sums(self, sq: float, total: float, n: int, noise: float):
        self.sq += sq
        self.sum += total
        self.n += n
        self.noise_sq += noise ** 2 * n

    def row(self, codec: str, level) -> dict:
        sigma = math.sqrt(self.noise_sq / self.n) if self.n else math.nan
        mean = self.sum / self.n if self.n else math.nan
        spread = math.sqrt(max(self.sq / self.n - mean ** 2, 0.0) / self.n) if self.n else math.nan
        return {"codec": codec, "quantize_level": level, "lossless": level is None,
                "label": f"{codec} " + ("lossless" if level is None else f"q={level:g}"),
                "bits_per_pixel": 8.0 * self.bytes / self.pixels if self.pixels else math.nan,
                "payload_bytes": int(self.bytes), "pixels": int(self.pixels), "measured": int(self.n),
                "rmse_over_noise": math.sqrt(self.sq / self.n) / sigma if self.n else math.nan,
                "linf_over_delta": self.worst, "mean_bias_over_noise": mean / sigma,
                "mean_bias_standard_error_over_noise": spread / sigma,
                "median_step_over_noise": float(np.median(np.concatenate(self.steps))) if self.steps else math.nan}


def _by_file(rows) -> list[tuple[int, object]]:
    """(index of the plane within its file, row), in manifest order: compress numbers planes so."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        out.append((seen.get(row.path, 0), row))
        seen[row.path] = seen.get(row.path, 0) + 1
    return out


def _fitsae(codec, predictor, data_cfg, geometry, rows, quant, eta: int, family: str) -> _Tally:
    from fitsae.codec.bounded import encode_plane

    tally = _Tally()
    for index, row in _by_file(rows):
        plane, stats = encode_plane(codec, predictor, data_cfg, geometry, row, index, eta, "best", quant, family)
        tally.bytes += plane.payload_bytes
        tally.pixels += row.height * row.width
        tally.add_sums(stats["squared_error"], stats["error_sum"], stats["measured"], row.noise)
        tally.worst = max(tally.worst, stats["worst_over_delta"])
        sizes = [h * w for _, _, h, w in geometry.origins(row.height, row.width)]
        tally.steps.append(np.repeat(np.asarray(stats["deltas"]) / row.noise, sizes))
    return tally


def _baseline(rows, setting: Setting) -> _Tally:
    from fitsae.codec.planes import read_plane

    tally = _Tally()
    for row in rows:
        x = read_plane(row).pixels
        filled = np.nan_to_num(x, nan=row.median)
        stored = None
        if row.bitpix > 0 and setting.lossless:
            stored = (stored_integers(x, row.bitpix, row.bscale, row.bzero), row.bscale, row.bzero)
        result = roundtrip(filled, setting, stored=stored)
        # RICE's own steps; JPEG-XL codes the same integers. Lossless: one stored unit.
        delta = np.full(x.shape, abs(row.bscale)) if setting.lossless else rice_steps(filled, setting.quantize_level)
        tally.bytes += result.payload_bytes
        tally.pixels += x.size
        tally.add(result.decoded - x, delta, row.noise)
        tally.steps.append((delta / row.noise).ravel())
    return tally


def bounded_rows(frozen, rows, levels=LEVELS, eta: int | None = None, tile: int = 256, family: str = "best",
                 baselines: bool = True, seed: int = 1) -> list[dict]:
    """Rows of the error-bounded comparison over manifest ``rows`` (held-out planes).

    Parameters
    ----------
    frozen : fitsae.codec.artifact.FrozenModel
    rows : list of manifest rows
        Indexed with ``data.edge = pad`` as ``fitsae compress`` indexes them.
    levels : quantize levels q (Δ = σ_noise/q)
    eta : budget of latent channels (default all), each tile keeping its best η′ ≤ eta
    tile : side of the codec's tiles (``compress --tile``)
    family : residual density (``compress --residual-density``)
    baselines : also RICE_1 and JPEG-XL at the same levels (and lossless on integer planes)
    seed : dither seed (``compress --dither-seed``)

    Returns
    -------
    list of dict
        One per codec and level (``quantize_level`` None: lossless, when every plane is
        integer), keys as in the module docstring; ``payload_bytes`` of the fitsae rows equals
        the summed payload of the containers ``fitsae compress`` writes with the same options.
    """
    from fitsae.codec.encoder import TileCodec
    from fitsae.codec.planes import Geometry
    from fitsae.codec.predict import Predictor
    from fitsae.codec.quantize import Quantization

    eta = int(eta or frozen.model.latent_channels)
    codec, predictor = TileCodec(frozen.model, frozen.tables), Predictor(frozen)
    geometry = Geometry.of(frozen.model, tile)
    integer = all(r.bitpix > 0 for r in rows)
    out = []
    for q in list(levels) + ([None] if integer else []):
        quant = (Quantization("lossless", seed=seed) if q is None
                 else Quantization("quantize", level=q, seed=seed, int_to_float=True))
        tally = _fitsae(codec, predictor, frozen.cfg.data, geometry, rows, quant, eta, family)
        out.append(tally.row("fitsae", q))
        if baselines:
            for name in CODECS[1:]:
                out.append(_baseline(rows, Setting(name, q)).row(name, q))
    return out
