"""``fitsae evaluate``: score a run's checkpoints on held-out images against PCA, fpack and JPEG-XL.

One evaluation of one checkpoint is a single pass over the test tiles. For every batch and every
η the model encodes, masks, and decodes μ and log σ²; the PCA baseline reconstructs the same tiles
with as many kept values; all errors go into exact sums (:mod:`fitsae.evaluate.metrics`), against
the noisy input and, on simulated data that carry a ``TRUTH`` plane, against the noiseless truth. Under
``mpirun`` every rank streams its own share of tiles (the data pipeline shards them so that each
tile is scored exactly once) and one allreduce at the end combines the sums, so the numbers do not
depend on the number of ranks.

Things done once per invocation, not per checkpoint: indexing the test images, fitting PCA on a
sample of the *training* images (``--pca-tiles``; never on the test images) and the classical
baselines, fpack and JPEG-XL (:mod:`fitsae.evaluate.baselines`; they do not depend on the model).

Watch mode (``--watch``) polls ``RUN/checkpoints`` and evaluates every checkpoint it has not
scored yet, writing ``eval/*`` scalars to ``RUN/tb/eval`` (rank 0) at the checkpoint's step. It
stops when it has scored a checkpoint at or beyond ``train.steps`` of the run's params.yaml
(training always writes a final checkpoint at its last step), or when no new checkpoint appeared
for ``--watch-timeout`` seconds (training died or was preempted and not requeued).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fitsae import __version__, distributed
from fitsae.budget import EXHAUSTIVE_UP_TO, ladder
from fitsae.config import to_dict
from fitsae.evaluate import baselines as baselines_mod
from fitsae.evaluate.metrics import Z_BIN_EDGES, DataRange, MetricBook
from fitsae.evaluate.pca import PCAFit, StreamingPCA, from_patches, to_patches
from fitsae.evaluate.plots import draw_all, pick_etas
from fitsae.evaluate.report import format_fpack_table, format_table, write_report
from fitsae.progress import Progress

__all__ = ["EvalOptions", "EvaluationError", "run", "default_etas", "parse_etas", "resolve_etas"]

log = logging.getLogger("fitsae")

# Dense models are cheap per η (one small matmul each), so "every η" is the default while the
# budget tries every η′ anyway (fitsae.budget); beyond, a log-spaced spread keeps an evaluation
# to minutes.
_ALL_ETAS_UP_TO = EXHAUSTIVE_UP_TO
_SPREAD = 16


class EvaluationError(RuntimeError):
    """Evaluation cannot proceed (bad run dir, checkpoint, data or option); the message says why."""


@dataclass
class EvalOptions:
    """What ``fitsae evaluate`` was asked to do (see ``fitsae evaluate --help``)."""

    run_dir: Path
    data: list[str]
    out: Path | None = None
    etas: list[int] | str | None = None  # a list, "all", or None for the default spread
    checkpoint: str = "latest"
    watch: bool = False
    poll_seconds: float = 30.0
    watch_timeout: float = 3600.0
    batch_size: int | None = None
    max_tiles: int | None = None
    pca_data: list[str] | None = None
    pca_tiles: int = 2000
    fpack_tiles: int = 64
    fpack: bool = True
    tensorboard: bool = True
    plots: bool = True
    example_size: int = 128
    logbetas: list[float] | None = None  # β-VAE runs: the log10 β grid (default: spread over training range)
    compare: Path | None = None  # β-VAE runs: a tunable AE's report.json to draw on the same RD axes

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "eval"


def default_etas(kind: str, channels: int) -> list[int]:
    """Every η for a small dense latent; otherwise a log-spaced spread over 1..C that includes C.

    The spread is taken from the budget's ladder (:func:`fitsae.budget.ladder`), so that every
    scored budget is a candidate of the next and the AE error cannot rise between them.
    """
    if kind == "dense" and channels <= _ALL_ETAS_UP_TO:
        return list(range(1, channels + 1))
    steps = ladder(channels)
    if len(steps) == channels:  # every η′ is on the ladder
        spread = np.unique(np.round(np.geomspace(1, channels, min(_SPREAD, channels))).astype(int))
        return [int(e) for e in spread]
    stride = max(1, round(len(steps) / _SPREAD))
    spread = steps[::stride]
    return spread if spread[-1] == channels else spread + [channels]


def parse_etas(text: str | None) -> list[int] | str | None:
    """``"1,2,8"`` or ``"1-4,8"`` → sorted η list; ``"all"`` → ``"all"``; empty → None (default).

    Only the syntax is checked here: the range 1..C is checked against the model once it is
    loaded (with ``--watch`` the run may not even exist yet).
    """
    if text is None or text.strip() == "":
        return None
    if text.strip() == "all":
        return "all"
    etas = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(part)]
        except ValueError:
            raise EvaluationError(f"--etas {text!r}: {part!r} is not an integer or range a-b") from None
        etas.update(values)
    if not etas:
        raise EvaluationError(f"--etas {text!r}: no η values")
    return sorted(etas)


def resolve_etas(requested: list[int] | str | None, kind: str, channels: int) -> list[int]:
    """The η to evaluate for a model with ``channels`` latent channels (see :func:`parse_etas`)."""
    if requested is None:
        return default_etas(kind, channels)
    if requested == "all":
        return list(range(1, channels + 1))
    bad = [e for e in requested if not 1 <= e <= channels]
    if bad:
        raise EvaluationError(f"--etas {bad} outside 1..{channels} (the model's latent channels)")
    return list(requested)


# --- data ------------------------------------------------------------------------------------


def _manifest_for(paths: list[str], data_cfg, save_to: Path, what: str):
    """Index ``paths`` (or load a ``.jsonl`` manifest) and record it beside the report.

    Under MPI the files are scanned by all ranks in parallel and every rank gets the whole
    manifest; rank 0 writes it to ``save_to`` as a record of exactly what was evaluated.
    """
    from fitsae.data.manifest import Manifest, index_paths

    try:
        if len(paths) == 1 and str(paths[0]).endswith(".jsonl"):
            manifest, rejected = Manifest.load(paths[0]), []
        else:
            manifest, rejected = index_paths(list(paths), data_cfg, comm=distributed.comm())
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{what}: {err}") from err
    if rejected:
        log.warning("%s: %d input(s) rejected:\n%s", what, len(rejected),
                    "\n".join(f"  {_describe_rejected(r)}" for r in rejected))
    if len(manifest) == 0:
        raise EvaluationError(f"{what}: no usable images in {', '.join(map(str, paths))}")
    if distributed.is_root():
        manifest.save(save_to)
    return manifest


def _describe_rejected(item) -> str:
    if isinstance(item, dict):
        return f"{item.get('path')} HDU {item.get('hdu')}: {item.get('reason')}"
    return str(item)


def _spread_sample(manifest, max_tiles: int | None):
    """Image planes spread evenly over ``manifest`` holding about ``max_tiles`` tiles.

    A tile budget taken from the front of the manifest would sample the first few files only
    (one night, one field); evenly spaced planes sample the whole set. The choice depends only
    on the manifest, never on the number of ranks.
    """
    from fitsae.data.manifest import Manifest

    counts = [math.prod(row.tiles) for row in manifest]
    total = sum(counts)
    if max_tiles is None or total <= max_tiles:
        return manifest
    wanted = math.ceil(max_tiles * len(counts) / total)
    picks = np.unique(np.round(np.linspace(0, len(counts) - 1, max(1, wanted))).astype(int))
    return Manifest([manifest[int(i)] for i in picks])


def _batches(manifest, data_cfg, seed: int, batch_size: int, limit_total: int | None, truth: bool = False,
             originals: bool = False, what: str | None = None):
    """Numpy batches of this rank's share of at most ``limit_total`` whole tiles.

    The pipeline deals tiles round-robin (rank r gets tiles r, r + size, ...), so taking the
    first ``limit_total / size`` tiles on every rank scores exactly the first ``limit_total``
    tiles of the (sampled) manifest whatever the number of ranks.

    With ``truth``, when any plane has a ``TRUTH`` plane, each batch also carries ``truth``
    (B, S, S): the noiseless tile in physical units, pixel for pixel aligned with ``x``, NaN for
    planes without truth. With ``originals``, ``pixels`` (B, S, S): the tile's pixels exactly as
    stored (unfilled, never normalized), and what its plane stores — ``bitpix``, ``bscale``,
    ``bzero`` (B,). See :meth:`fitsae.data.pipeline.Pipeline.tile_pixels`.
    With ``what``, rank 0 logs progress lines with an ETA (:mod:`fitsae.progress`).
    """
    from fitsae.data.pipeline import Pipeline

    w = distributed.workers()
    sample = _spread_sample(manifest, limit_total)
    pipe = Pipeline(sample, data_cfg, seed=seed, rank=w.rank, size=w.size)
    tiles = sum(math.prod(row.tiles) for row in sample)
    share = tiles // w.size + (1 if w.rank < tiles % w.size else 0)
    budget = None
    if limit_total is not None:
        budget = limit_total // w.size + (1 if w.rank < limit_total % w.size else 0)
        share = min(share, budget)
    progress = Progress(what + (f" (rank 0's share of {w.size})" if w.size > 1 else ""), share) if what else None
    taken = 0
    for batch in pipe.evaluation(batch_size).as_numpy_iterator():
        if budget is not None:
            if taken >= budget:
                break
            keep = min(len(batch["x"]), budget - taken)
            batch = {k: v[:keep] for k, v in batch.items()}
        taken += len(batch["x"])
        if truth and pipe.has_truth:
            batch["truth"] = pipe.tile_pixels(batch["tile_id"], "truth")
        if originals:
            rows = [pipe.manifest[int(pipe.tile_row[t])] for t in batch["tile_id"]]
            batch["pixels"] = pipe.tile_pixels(batch["tile_id"], "image")
            batch["bitpix"] = np.array([r.bitpix for r in rows], np.int64)
            batch["bscale"] = np.array([r.bscale for r in rows], np.float64)
            batch["bzero"] = np.array([r.bzero for r in rows], np.float64)
        yield batch
        if progress is not None:
            progress.advance(len(batch["x"]))
    if progress is not None:
        progress.finish()


class _Geometry:
    """Which pixels of a tile every method scores, and the AE/PCA code sizes there.

    Dense models see exactly the image size they were trained on, so larger tiles are
    centre-cropped to it; conv models see the largest part of the tile divisible by their stride.
    AE, PCA and fpack are all scored on this same region.
    """

    def __init__(self, model, tile_shape: tuple[int, int]):
        self.kind = model.model_config.kind
        self.channels = int(model.latent_channels)
        self.stride = int(model.stride)
        th, tw = tile_shape
        if self.kind == "dense":
            mh, mw = model.image_shape[:2]
            if th < mh or tw < mw:
                raise EvaluationError(
                    f"test tiles are {th}×{tw} but the dense model was trained on {mh}×{mw} images; "
                    "evaluate with data of at least that size (dense models are tied to their input size)"
                )
            self.shape = (int(mh), int(mw))
            self.patch = self.shape
        else:
            self.shape = (th - th % self.stride, tw - tw % self.stride)
            if min(self.shape) < self.stride:
                raise EvaluationError(f"test tiles {th}×{tw} are smaller than the model's stride {self.stride}")
            self.patch = (self.stride, self.stride)
        self.tile_shape = (th, tw)
        h, w = self.shape
        self.y0, self.x0 = (th - h) // 2, (tw - w) // 2
        self.pixels = h * w
        self.positions = (h // self.patch[0]) * (w // self.patch[1])

    def crop(self, x: np.ndarray) -> np.ndarray:
        h, w = self.shape
        return x[:, self.y0:self.y0 + h, self.x0:self.x0 + w]

    def latent_values(self, eta: int) -> int:
        return int(eta) * self.positions

    @property
    def pca_dim(self) -> int:
        return self.patch[0] * self.patch[1]

    def as_dict(self) -> dict:
        return {"tile_shape": list(self.tile_shape), "eval_shape": list(self.shape),
                "eval_offset": [self.y0, self.x0], "pca_patch": list(self.patch),
                "latent_positions": self.positions}


def _denormalize(x, batch, data_cfg) -> np.ndarray:
    from fitsae.data.normalize import denormalize

    return np.asarray(denormalize(x, batch["offset"], batch["scale"], data_cfg), dtype=np.float64)


# --- baselines -----------------------------------------------------------------------------


def fit_pca(manifest, data_cfg, geometry: _Geometry, seed: int, batch_size: int, tiles: int) -> PCAFit:
    """Stream a sample of training tiles through :class:`StreamingPCA`; identical fit on all ranks."""
    pca = StreamingPCA(geometry.pca_dim)
    for batch in _batches(manifest, data_cfg, seed, batch_size, tiles, what="PCA fit on training tiles"):
        x = geometry.crop(np.asarray(batch["x"], dtype=np.float64))
        pca.update(to_patches(x, geometry.patch))
    pca.reduce()
    return pca.fit()


# PCA's coefficients are quantized on a grid of the noise level (normalized units, σ ≈ 1) — the
# step fpack's q = 1 uses for pixels — and coded under Laplace tables of the fitted eigenvalues.
PCA_STEP = 1.0


def _pca_code(fit: PCAFit, tables, x: np.ndarray, geometry: _Geometry, eta: int):
    """PCA at k = η per patch, coefficients quantized and entropy-coded like the AE's latents.

    Returns the reconstruction (B, H, W, 1) from the quantized coefficients and, per tile, the
    coded bytes and the tables' estimate in bits.
    """
    from fitsae.entropy import encode_latents

    rows = to_patches(x, geometry.patch)
    k = np.rint(fit.coefficients(rows, eta) / PCA_STEP).astype(np.int64)
    rec = from_patches(fit.from_coefficients(k * PCA_STEP), geometry.shape, geometry.patch)[..., None]
    per_tile = k.reshape(len(x), -1, k.shape[-1])
    coded = [len(encode_latents(tables, tile)[0]) for tile in per_tile]
    estimated = [tables.ideal_bits(tile) for tile in per_tile]
    return rec, coded, estimated


def classical_baselines(manifest, data_cfg, geometry: _Geometry, seed: int, batch_size: int,
                        tiles: int, peak: float) -> dict:
    """Every fpack and JPEG-XL setting on the first ``tiles`` test tiles, reduced over ranks.

    The codecs compress each tile's pixels as stored in its file (what fpack would read), and
    are scored against them and, where known, against the truth. Returns ``{"fpack": [...],
    "jpegxl": [...]}``, one entry per setting with its label, rates (payload and whole file, and
    the ratio to the input's own bits) and errors. The lossless settings run when every test
    plane is integer (BITPIX > 0) with no masked pixel, so that every tile is exactly integers.
    """
    book = MetricBook()
    sample = _spread_sample(manifest, tiles)
    integer = data_cfg.edge != "pad" and all(row.bitpix > 0 and row.n_masked == 0 for row in sample)
    reasons = {s: baselines_mod.applicable(s, geometry.shape, integer) for s in baselines_mod.DEFAULT_SETTINGS}
    settings = [s for s, reason in reasons.items() if reason is None]
    for setting in settings:
        book.codec(setting)
    for batch in _batches(manifest, data_cfg, seed, batch_size, tiles, truth=True, originals=True,
                          what="baselines on test tiles"):
        filled = geometry.crop(_denormalize(batch["x"], batch, data_cfg))[..., 0]
        stored = geometry.crop(batch["pixels"])
        # Masked pixels (NaN, BLANK) keep the value the pipeline filled them with, as for the AE.
        x_phys = np.where(np.isfinite(stored), stored, filled)
        noise_phys = np.asarray(batch["noise"], np.float64) * np.asarray(batch["scale"], np.float64)
        truth = geometry.crop(batch["truth"]) if "truth" in batch else None
        for i in range(len(x_phys)):
            tile_id = int(batch["tile_id"][i])
            bitpix, bscale, bzero = int(batch["bitpix"][i]), float(batch["bscale"][i]), float(batch["bzero"][i])
            ints = None
            if bitpix > 0:
                try:
                    ints = (baselines_mod.stored_integers(x_phys[i], bitpix, bscale, bzero), bscale, bzero)
                except ValueError as err:
                    if integer:
                        raise EvaluationError(f"test tile {tile_id}: {err}") from err
            for setting in settings:
                out = baselines_mod.roundtrip(x_phys[i], setting, tile_id=tile_id, stored=ints)
                entry = book.codec(setting)
                entry.update(x_phys[i:i + 1], out.decoded[None], noise_phys[i:i + 1],
                             None if truth is None else truth[i:i + 1])
                entry.add_bytes(out.payload_bytes, out.table_bytes, out.file_bytes, x_phys[i].size * abs(bitpix))
    book.reduce()
    results = {"fpack": [], "jpegxl": []}
    for setting in settings:
        results[setting.family].append({**setting.as_dict(), **book[setting].summary(peak)})
    # Lossless settings on float data are expected to be left out; anything else is worth a warning.
    for lossless in (True, False):
        for reason in sorted({r for s, r in reasons.items() if r is not None and s.lossless == lossless}):
            (log.info if lossless else log.warning)("baselines: %s", reason)
    return results


# --- one checkpoint ------------------------------------------------------------------------


def _example_entry(x, mu, log_var, noise, size: int) -> tuple[list, dict]:
    h, w = x.shape[:2]
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    cut = (slice(y0, y0 + ch), slice(x0, x0 + cw))

    def plain(a):
        return np.round(np.asarray(a, np.float64)[cut], 5).tolist()

    return plain(x), {"mu": plain(mu), "sigma": plain(np.exp(0.5 * log_var)), "residual": plain(x - mu)}


def _example(batch, x64, noise, i: int, shown: dict, size: int) -> dict:
    """Tile ``i`` of a batch for the examples figure: its input and, at each example η, μ, σ, the
    residual and the η′ the budget kept (normalized units, centre ``size`` × ``size``)."""
    tile = {"tile_id": int(batch["tile_id"][i]), "noise": float(noise[i]), "etas": []}
    for eta, (mu, log_var, kept) in shown.items():
        tile["input"], entry = _example_entry(x64[i, ..., 0], mu[i, ..., 0], log_var[i, ..., 0], noise[i], size)
        tile["etas"].append({"eta": int(eta), "eta_kept": int(kept[i]), **entry})
    return tile


def score_checkpoint(codec, manifest, data_cfg, geometry: _Geometry, etas: list[int], pca: PCAFit,
                     seed: int, batch_size: int, max_tiles: int | None, example_size: int):
    """One pass over the test tiles: AE and PCA sums for every η, data range and example tiles.

    PCA keeps k = η components per patch, its coefficients quantized and entropy-coded too
    (:func:`_pca_code`), so both methods' rates are real bytes.

    The AE is scored through the codec (:class:`fitsae.codec.encoder.TileCodec`, the encoder
    ``fitsae compress`` uses): latents quantized as the file stores them, at budget η each tile
    keeps the first η′ ≤ η channels whose decoded μ is closest to it (:mod:`fitsae.budget`), and
    its rate is the bytes the entropy coder writes for those channels. The plain mask (exactly η
    channels) is scored alongside as ``ae_fixed``, with its own coded bytes.

    Returns the reduced :class:`MetricBook`, the reduced :class:`DataRange`, the test tile count,
    and (rank 0) example tiles in normalized units: the first tile, and the tile of all ranks
    with the largest error at the largest η (unless that is the first one).
    """
    from fitsae.entropy import tables_from_widths

    book = MetricBook()
    top = max(etas)
    pca_tables = tables_from_widths(np.sqrt(np.maximum(pca.eigenvalues[:top], 0.0)), PCA_STEP)
    for eta in etas:  # same keys in the same order on every rank, before any data
        book.gaussian(("ae", eta))
        book.errors(("ae_fixed", eta))
        book.kept(("ae_kept", eta), top)
        book.rate(("ae_rate", eta))
        book.rate(("ae_fixed_rate", eta))
        book.rate(("pca_rate", eta))
        book.errors(("pca", eta))
        book.bands(("ae_bands", eta))
        book.bands(("pca_bands", eta))
    for before, after in zip(etas, etas[1:]):
        book.paired(("ae_change", before, after))
    data_range = DataRange()
    example_etas = pick_etas(etas)
    examples = []
    worst: tuple[float, dict | None] = (-math.inf, None)
    tiles = 0
    for batch in _batches(manifest, data_cfg, seed, batch_size, max_tiles, truth=True, what="scoring test tiles"):
        x = geometry.crop(np.asarray(batch["x"], np.float32))
        x64 = x.astype(np.float64)
        x_phys = geometry.crop(_denormalize(batch["x"], batch, data_cfg))
        noise = np.asarray(batch["noise"], np.float64)
        noise_phys = noise * np.asarray(batch["scale"], np.float64)
        background_phys = np.asarray(batch["offset"], np.float64)
        truth_phys = geometry.crop(batch["truth"])[..., None] if "truth" in batch else None
        data_range.update(x_phys)
        tiles += len(x)
        # The codec keeps decoded values inside each tile's range (recorded in the container).
        lo, hi = x_phys.min(axis=(1, 2, 3)), x_phys.max(axis=(1, 2, 3))

        def to_physical(mu, lo=lo, hi=hi, batch=batch):
            phys = _denormalize(np.asarray(mu, np.float64)[..., None], batch, data_cfg)[..., 0]
            return np.clip(phys, lo[:, None, None], hi[:, None, None])

        chosen, fixed = codec.choose(x[..., 0], x_phys[..., 0], to_physical, etas)
        shown = {}  # example η → the chosen (μ, log σ², η′) of every tile in the batch
        previous = None
        for eta in etas:
            pick, plain = chosen[eta], fixed[eta]
            log_var = codec.per_tile(pick.symbols, pick.eta, variance=True)[..., None]
            mu, mu_phys = pick.mu[..., None].astype(np.float64), pick.mu_phys[..., None]
            book.errors(("ae_fixed", eta)).update(x_phys, plain.mu_phys[..., None], noise_phys, truth_phys)
            book.gaussian(("ae", eta)).update(x64, mu, log_var, x_phys, mu_phys, noise_phys, truth_phys)
            book.bands(("ae_bands", eta)).update(x_phys, mu_phys, background_phys, noise_phys)
            book.kept(("ae_kept", eta), top).update(pick.eta)
            for choice, key in ((pick, "ae_rate"), (plain, "ae_fixed_rate")):
                for i in range(len(x)):
                    k = choice.symbols[i][..., :int(choice.eta[i])]
                    data, _ = codec.code(k, int(choice.eta[i]), choice.background[i])
                    book.rate((key, eta)).update(len(data), codec.estimated_bits(k), geometry.pixels)
            # σ_noise is constant over a tile: the tile's error in noise units ranks η′ exactly
            # as its squared error in physical units does (the codec's criterion).
            tile_error = pick.error / geometry.pixels / noise_phys ** 2
            if previous is not None:
                book.paired(("ae_change", previous[0], eta)).update(previous[1], tile_error)
            previous = (eta, tile_error)
            rec, coded, estimated = _pca_code(pca, pca_tables, x64, geometry, eta)
            rec = _denormalize(rec.astype(np.float32), batch, data_cfg)
            for nbytes, bits in zip(coded, estimated, strict=True):
                book.rate(("pca_rate", eta)).update(nbytes, bits, geometry.pixels)
            book.errors(("pca", eta)).update(x_phys, rec, noise_phys, truth_phys)
            book.bands(("pca_bands", eta)).update(x_phys, rec, background_phys, noise_phys)
            if eta in example_etas:
                shown[eta] = (mu, log_var, pick.eta)
        if not examples and distributed.is_root():
            examples.append({**_example(batch, x64, noise, 0, shown, example_size), "shown_as": "first tile"})
        i = int(np.argmax(previous[1]))  # previous: the largest budget's per-tile error
        if previous[1][i] > worst[0]:
            worst = (float(previous[1][i]), _example(batch, x64, noise, i, shown, example_size))
    # The worst tile of all ranks joins the first one: where the model fails is worth a look.
    candidates = distributed.comm().gather(worst, root=0)
    if distributed.is_root():
        error, tile = max(candidates, key=lambda c: c[0])
        if tile is not None and all(t["tile_id"] != tile["tile_id"] for t in examples):
            examples.append({**tile, "shown_as": f"worst tile: RMSE/σ_noise {math.sqrt(error):.3g} at η={top}"})
    book.reduce()
    data_range.reduce()
    tiles = int(distributed.allreduce_sum(tiles))
    return book, data_range, tiles, examples


# --- report --------------------------------------------------------------------------------


def _results(book: MetricBook, geometry: _Geometry, etas: list[int], peak: float) -> list[dict]:
    rows = []
    for eta in etas:
        values = geometry.latent_values(eta)
        kept = book[("ae_kept", eta)].summary()
        rate = book[("ae_rate", eta)].summary()
        ae = {**book[("ae", eta)].summary(peak), "bands": book[("ae_bands", eta)].summary(), **kept, **rate}
        pca = {**book[("pca", eta)].summary(peak), "bands": book[("pca_bands", eta)].summary(),
               **book[("pca_rate", eta)].summary(), "quantization_step": PCA_STEP}
        bpp = rate["bits_per_pixel_coded"]  # compression_ratio is added by _with_ratios
        rows.append({
            "eta": int(eta),
            "latent_values": values,
            "bits_per_pixel": bpp,
            "ae": ae,
            "ae_fixed_mask": {**book[("ae_fixed", eta)].summary(peak), **book[("ae_fixed_rate", eta)].summary()},
            "pca": pca,
        })
    return rows


def _input_bits(manifest, max_tiles: int | None) -> tuple[list[int], float]:
    """The evaluated planes' BITPIX values and their mean |BITPIX|, weighted by tiles scored."""
    sample = _spread_sample(manifest, max_tiles)
    weights = [math.prod(row.tiles) for row in sample]
    bits = sum(w * abs(row.bitpix) for w, row in zip(weights, sample)) / sum(weights)
    return sorted({row.bitpix for row in sample}), float(bits)


def _with_ratios(rows: list[dict], input_bits: float) -> list[dict]:
    """Every compression ratio as input bits ÷ stored bits: the row's (``bits_per_pixel``, η
    latent values of 32 bits), the AE's (its coded bits when the codec measured them, else the
    stored ones), the plain mask's and PCA's (their own coded bits when present, else the row's)."""
    for row in rows:
        row["compression_ratio"] = input_bits / row["bits_per_pixel"]
        for method in ("ae", "ae_fixed_mask", "pca"):
            entry = row.get(method)
            if entry is None:
                continue
            bits = entry.get("bits_per_pixel_coded") or entry.get("bits_per_pixel_stored") or row["bits_per_pixel"]
            entry["compression_ratio"] = input_bits / bits
    return rows


# A rise of the pooled error counts as significant when the mean per-tile change exceeds this many
# standard errors (about 2.5 % one-sided for a normal mean).
SIGNIFICANT_SE = 2.0


# A step to the next η counts as a rise when the error grows by more than this fraction.
RISE_TOLERANCE = 1e-3


def _rises(values: list[tuple[int, float | None]]) -> list[dict]:
    """Steps from one scored η to the next where the error grows by more than ``RISE_TOLERANCE``.

    ``values`` are (η, error) in η order; a missing error (None) never counts as a rise.
    """
    return [{"from_eta": a, "to_eta": b, "increase": vb - va, "relative_increase": (vb - va) / va}
            for (a, va), (b, vb) in zip(values, values[1:])
            if va is not None and vb is not None and vb > va * (1 + RISE_TOLERANCE)]


def _monotonic_note(rows: list[dict], book: MetricBook) -> dict:
    """Does the AE error fall (weakly) as η grows? Returned as a fact in the report, not hidden.

    ``ae_error_nonincreasing_in_eta`` is the plain reading: no step from one scored η to the next
    raises ``rmse_over_noise`` by more than 0.1 %. Each rise is listed with the paired per-tile
    statistics (:class:`~fitsae.evaluate.metrics.PairedChangeSums`) and ``significant`` when it is
    larger than ``SIGNIFICANT_SE`` standard errors of the tile-to-tile scatter;
    ``ae_error_increase_significant`` says whether any is.

    The AE is scored with its budget choice (:mod:`fitsae.budget`), under which no tile's error
    can grow with η; a rise here means the choice is broken. The plain mask's reading
    (``ae_fixed_mask_*``) is the model's own behaviour and may rise: it is reported, not hidden.
    """
    rises = []
    for rise in _rises([(r["eta"], r["ae"]["rmse_over_noise"]) for r in rows]):
        paired = book[("ae_change", rise["from_eta"], rise["to_eta"])].summary()
        se = paired["standard_error"]
        rises.append({"from_eta": rise["from_eta"], "to_eta": rise["to_eta"], "increase": rise["increase"],
                      "mean_tile_change": paired["mean_change"], "standard_error": se,
                      "n_tiles": paired["n_tiles"],
                      "significant": bool(not math.isfinite(se) or paired["mean_change"] > SIGNIFICANT_SE * se)})
    fixed_rises = _rises([(r["eta"], r.get("ae_fixed_mask", {}).get("rmse_over_noise")) for r in rows])
    return {"ae_error_nonincreasing_in_eta": not rises, "ae_error_increases": rises,
            "ae_selection": "budget: each tile keeps the first η′ ≤ η latent channels whose μ has the "
                            "smallest squared error among fitsae.budget.candidates(η) (every η′ ≤ η up to "
                            f"{EXHAUSTIVE_UP_TO} channels), as `fitsae compress` does per plane",
            "ae_fixed_mask_nonincreasing_in_eta": not fixed_rises, "ae_fixed_mask_increases": fixed_rises,
            "ae_error_increase_significant": any(r["significant"] for r in rises),
            "ae_error_increase_test": f"paired per-tile change of mean(((x − x̂)/σ_noise)²) > "
                                      f"{SIGNIFICANT_SE:g} standard errors",
            "ae_error_by_band": _band_trend(rows)}


def _band_trend(rows: list[dict]) -> list[dict]:
    """For each brightness band: does the AE's error there fall (weakly) as η grows?

    Same 0.1 % tolerance as the pooled reading. ``share_of_error`` is the band's part of the AE's
    squared error at the largest η, so a rise confined to a band that is a tiny fraction of the
    pixels but most of the error is visible as such.
    """
    if not rows or "bands" not in rows[0]["ae"]:
        return []
    out = []
    for i, band in enumerate(rows[0]["ae"]["bands"]):
        rises = _rises([(r["eta"], r["ae"]["bands"][i]["rmse_over_noise"]) for r in rows])
        out.append({"snr_low": band["snr_low"], "snr_high": band["snr_high"],
                    "pixel_fraction": band["pixel_fraction"],
                    "share_of_error": rows[-1]["ae"]["bands"][i]["share_of_error"],
                    "nonincreasing_in_eta": not rises, "rises": rises})
    return out


# --- driver --------------------------------------------------------------------------------


def _load(run_dir, checkpoint):
    from fitsae.train.checkpoints import CheckpointError, load_model, resolve_checkpoint

    try:
        cfg, model, step = load_model(run_dir, checkpoint)
    except CheckpointError as err:
        raise EvaluationError(str(err)) from err
    except (OSError, ValueError, IndexError) as err:
        # TensorFlow's checkpoint reader reports some truncated files this way (IndexError:
        # "Read less bytes than requested") rather than as an OpError.
        _, prefix = resolve_checkpoint(run_dir, checkpoint)
        raise EvaluationError(f"{prefix}: cannot restore the model from this checkpoint "
                              f"(corrupt or truncated file?): {err}") from err
    if model.model_config.kind not in ("dense", "conv", "bvae"):
        raise EvaluationError(f"{run_dir}: cannot evaluate a model of kind {model.model_config.kind!r}")
    return cfg, model, step


def _checkpoint_steps(run_dir) -> list[int]:
    from fitsae.train.checkpoints import list_checkpoints

    return [step for step, _ in list_checkpoints(run_dir)]


class _Context:
    """Everything that does not depend on the checkpoint: data, PCA fit, fpack, TensorBoard."""

    def __init__(self, options: EvalOptions, cfg, model):
        from dataclasses import replace

        self.options = options
        self.cfg = cfg
        out = options.out_dir
        self.data_cfg = cfg.data
        self.seed = int(cfg.train.seed)
        self.batch_size = int(options.batch_size or cfg.data.batch_size)
        self.test_manifest = _manifest_for(
            options.data, replace(cfg.data, paths=list(options.data)), out / "test.manifest.jsonl", "test data"
        )
        train_paths = self.pca_paths = self._pca_paths()
        self.train_manifest = _manifest_for(
            train_paths, replace(cfg.data, paths=train_paths), out / "train.manifest.jsonl",
            "PCA training sample (use --pca-data to point elsewhere)",
        )
        self._warn_overlap()
        self.tile_shape = self._tile_shape()
        self.geometry = _Geometry(model, self.tile_shape)
        self.etas = resolve_etas(options.etas, self.geometry.kind, self.geometry.channels)
        log.info("fitting PCA (%s-dim %s) on up to %d training tiles",
                 self.geometry.pca_dim, "patches" if self.geometry.kind == "conv" else "images", options.pca_tiles)
        self.pca = fit_pca(self.train_manifest, self.data_cfg, self.geometry, self.seed, self.batch_size,
                           options.pca_tiles)
        self.baselines = None  # computed after the first pass, which provides the PSNR peak
        self.writer = None
        if options.tensorboard and distributed.is_root():
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(str(Path(options.run_dir) / "tb" / "eval"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _pca_paths(self) -> list[str]:
        """``--pca-data``, else the exact manifest training used (RUN/manifest.jsonl), else data.paths."""
        if self.options.pca_data:
            return list(self.options.pca_data)
        recorded = Path(self.options.run_dir) / "manifest.jsonl"
        if recorded.is_file():
            return [str(recorded)]
        if not self.cfg.data.paths:
            raise EvaluationError(
                f"{self.options.run_dir}: no RUN/manifest.jsonl and no data.paths in params.yaml to fit "
                "the PCA baseline on; give training images with --pca-data"
            )
        return list(self.cfg.data.paths)

    def _tile_shape(self) -> tuple[int, int]:
        shape = None
        for batch in _batches(self.test_manifest, self.data_cfg, self.seed, 1, 1):
            shape = tuple(int(v) for v in batch["x"].shape[1:3])
        # Every rank joins the allgather: one with no tiles (more ranks than tiles) learns the
        # shape from the others.
        shapes = [s for s in distributed.comm().allgather(shape) if s]
        if not shapes:
            raise EvaluationError("test data: the pipeline produced no tiles")
        return shapes[0]

    def _warn_overlap(self) -> None:
        def files(manifest):
            return {str(Path(row.path).resolve()) for row in manifest}

        shared = files(self.test_manifest) & files(self.train_manifest)
        if shared:
            log.warning("%d test file(s) are also in the training data (e.g. %s): scores are optimistic",
                        len(shared), sorted(shared)[0])

    def pca_summary(self) -> dict:
        fit = self.pca
        total = float(fit.eigenvalues.sum())
        return {
            "fit_on": "training data sample",
            "paths": self.pca_paths,
            "max_tiles": self.options.pca_tiles,
            "n_vectors": fit.n,
            "dim": fit.dim,
            "patch_shape": list(self.geometry.patch),
            "components_per": "patch" if self.geometry.kind == "conv" else "image",
            "eigenvalues": [float(v) for v in fit.eigenvalues],
            "explained_variance_ratio": [float(v) / total if total > 0 else math.nan for v in np.cumsum(fit.eigenvalues)],
            "units": "normalized (noise ≈ 1)",
        }


def _evaluate_one(ctx: _Context, model, step: int, out_dir: Path) -> dict:
    opts = ctx.options
    from fitsae.codec.artifact import tables_for
    from fitsae.codec.encoder import TileCodec

    log.info("evaluating checkpoint step %d at η = %s", step, ctx.etas)
    codec = TileCodec(model, tables_for(opts.run_dir, ctx.cfg, model, step))
    book, data_range, tiles, examples = score_checkpoint(
        codec, ctx.test_manifest, ctx.data_cfg, ctx.geometry, ctx.etas, ctx.pca, ctx.seed,
        ctx.batch_size, opts.max_tiles, opts.example_size,
    )
    peak = data_range.peak
    if ctx.baselines is None:
        ctx.baselines = (
            classical_baselines(ctx.test_manifest, ctx.data_cfg, ctx.geometry, ctx.seed, ctx.batch_size,
                                opts.fpack_tiles, peak)
            if opts.fpack and opts.fpack_tiles > 0 else {"fpack": [], "jpegxl": []}
        )
    input_bitpix, input_bits = _input_bits(ctx.test_manifest, opts.max_tiles)
    results = _with_ratios(_results(book, ctx.geometry, ctx.etas, peak), input_bits)
    report = {
        "schema_version": 1,
        "fitsae_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "run_dir": str(Path(opts.run_dir).resolve()),
            "checkpoint_step": int(step),
            "train_steps": int(ctx.cfg.train.steps),
            "kind": ctx.geometry.kind,
            "latent_channels": ctx.geometry.channels,
            "stride": ctx.geometry.stride,
            "config": to_dict(ctx.cfg.model),
        },
        "data": {
            "paths": [str(p) for p in opts.data],
            "manifest": str(opts.out_dir / "test.manifest.jsonl"),
            "n_tiles": tiles,
            **ctx.geometry.as_dict(),
            "pixels_per_tile": ctx.geometry.pixels,
            "normalization": getattr(ctx.data_cfg, "normalization", None),
            "psnr_peak": peak,
            "psnr_peak_definition": "max − min of all evaluated test pixels, physical units",
            "data_min": data_range.lo,
            "data_max": data_range.hi,
            "input_bitpix": input_bitpix,
            "input_bits_per_pixel": input_bits,
            "planes_with_truth": sum(1 for row in ctx.test_manifest if row.truth_hdu is not None),
            "units": {
                "mse": "physical units² (after BSCALE/BZERO), pooled over pixels",
                "rmse_over_noise": "sqrt(mean(((x − x̂)/σ_noise)²)), σ_noise per tile in physical units; "
                                   "measured against the noisy input, so a reconstruction that removes the "
                                   "noise (AE, PCA) scores about 1, while near-lossless fpack goes below",
                "psnr": "dB, 10 log10(psnr_peak² / mse)",
                "nll": "nats per pixel, Gaussian, normalized units (noise ≈ 1)",
                "sigma_z_std": "std of (x − μ)/σ, normalized units",
                "error": "e = x̂ − x, reconstruction minus reference; mean_error (physical units) and "
                         "mean_error_over_noise are its mean (the bias), max_abs_error(_over_noise) its ℓ∞ norm, "
                         "median/p99_abs_error_over_noise the median and 99th percentile of |e|/σ_noise "
                         "(from a histogram with 50 bins per decade: within 4.7 %)",
                "_truth": "the same figures against the noiseless truth (TRUTH planes of simulated data); "
                          "null when no evaluated plane has one",
                "compression_ratio": "input bits (|BITPIX| per pixel) ÷ stored bits",
            },
            "ranks": distributed.workers().size,
        },
        "results": results,
        "rate_note": "AE bits_per_pixel: 8 × the bytes the codec's entropy coder writes for each tile's kept "
                     "latents / pixels (fitsae.codec, tables frozen from the checkpoint); PCA's coefficients "
                     f"are quantized with step {PCA_STEP:g} (normalized units) and coded the same way, under Laplace tables of its "
                     "eigenvalues (pca.bits_per_pixel_coded); every compression_ratio is input bits ÷ stored bits",
        **_monotonic_note(results, book),
        "baselines": {**ctx.baselines, "fpack_tiles": opts.fpack_tiles,
                      "fpack_rate": "bits_per_pixel: compressed heap bytes (PCOUNT) × 8 / pixels; "
                                    "bits_per_pixel_with_headers: the whole file as written × 8 / pixels",
                      "jpegxl_rate": "bits_per_pixel: JPEG-XL lossless bytes of RICE_1's quantized integers "
                                     "at the same q × 8 / pixels; bits_per_pixel_with_headers: the same FITS "
                                     "file as RICE_1's with the JPEG-XL data as its heap"},
        "pca": ctx.pca_summary(),
        "calibration": {"bin_edges": [float(e) for e in Z_BIN_EDGES],
                        "note": "ae.z_hist counts include an underflow (first) and overflow (last) bin"},
        "examples": {"units": "normalized (noise ≈ 1)", "tiles": examples},
    }
    if distributed.is_root():
        write_report(report, out_dir)
        if opts.plots:
            draw_all(report, out_dir)
        if ctx.writer is not None:
            _write_scalars(ctx.writer, step, results)
    distributed.comm().Barrier()
    return report


def _write_scalars(writer, step: int, results: list[dict]) -> None:
    import tensorflow as tf

    with writer.as_default(step=int(step)):
        for row in results:
            tag = f"eta_{row['eta']:03d}"
            for method, keys in (("ae", ("rmse_over_noise", "rmse_over_noise_truth", "psnr", "nll", "sigma_z_std",
                                         "coverage_1sigma", "mean_eta_kept")),
                                 ("ae_fixed_mask", ("rmse_over_noise",)),
                                 ("pca", ("rmse_over_noise", "rmse_over_noise_truth", "psnr"))):
                for key in keys:
                    value = row.get(method, {}).get(key)
                    if value is not None and math.isfinite(value):
                        tf.summary.scalar(f"eval/{method}_{key}/{tag}", float(value))
    writer.flush()


def _announce(report: dict, out_dir: Path) -> None:
    distributed.root_print(format_table(report))
    distributed.root_print(format_fpack_table(report))
    distributed.root_print(f"report: {out_dir / 'report.json'}")


def run(options: EvalOptions) -> list[dict]:
    """Evaluate the requested checkpoint(s); returns the reports (rank 0 also writes them).

    Raises
    ------
    EvaluationError
        Missing/corrupt checkpoint, no usable test or training images, bad η.
    """
    distributed.init_workers()
    run_dir = Path(options.run_dir)
    out = options.out_dir
    if not options.watch and not run_dir.is_dir():  # before anything is created under it
        raise EvaluationError(f"run directory {run_dir} does not exist")
    options = _usable_outputs(options)
    if options.watch:
        # A watcher may be started before training has created the run directory.
        return _watch(options)
    if options.checkpoint == "all":
        steps = _checkpoint_steps(run_dir)
        if not steps:
            raise EvaluationError(f"{run_dir}: no checkpoints in {run_dir / 'checkpoints'} (has this run trained?)")
    else:
        steps = [options.checkpoint]
    reports = []
    scorer = _Scorer(options)
    for i, wanted in enumerate(steps):
        cfg, model, step = _load(run_dir, wanted)
        last = i == len(steps) - 1
        target = out if last else out / "steps" / f"step-{step}"
        reports.append(scorer.score(cfg, model, step, target,
                                    copy_to=out / "steps" / f"step-{step}" if len(steps) > 1 and last else None))
    scorer.close()
    if scorer.ctx is not None:
        _announce(reports[-1], out)
    return reports


class _Scorer:
    """Scores checkpoints of one run as its model's ``rate_control`` says; ``run`` and ``--watch`` share it.

    ``"eta"`` (tunable AEs): per-η metrics against PCA and fpack, with the data, PCA fit and fpack
    baselines set up once (:class:`_Context`). ``"logbeta"`` (β-VAE): rate–distortion over log β.
    The model declares which, so no caller can score a model with the other's code.
    """

    def __init__(self, options: EvalOptions):
        self.options = options
        self.ctx = None

    def score(self, cfg, model, step: int, out_dir: Path, copy_to: Path | None = None) -> dict:
        """Evaluate one checkpoint into ``out_dir`` (rank 0 also writes the report to ``copy_to``)."""
        if model.rate_control == "logbeta":
            report = _evaluate_bvae(self.options, cfg, model, step, out_dir)
            if copy_to is not None and distributed.is_root():
                _write_bvae(self.options, report, copy_to)
            return report
        if self.ctx is None:
            self.ctx = _Context(self.options, cfg, model)
        report = _evaluate_one(self.ctx, model, step, out_dir)
        if copy_to is not None and distributed.is_root():
            write_report(report, copy_to)
        return report

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()


def _usable_outputs(options: EvalOptions) -> EvalOptions:
    """Refuse an output directory that cannot be written before any work; without a writable
    ``RUN/tb/eval``, score anyway and skip the TensorBoard scalars (a read-only run, someone
    else's, is still scorable with ``--out``). Rank 0 looks, every rank gets its verdict."""
    from dataclasses import replace

    from fitsae.outputs import unwritable

    problems = None
    if distributed.is_root():
        tb = Path(options.run_dir) / "tb" / "eval"
        problems = (unwritable(options.out_dir),
                    unwritable(tb) if options.tensorboard and Path(options.run_dir).is_dir() else None)
    out_problem, tb_problem = distributed.comm().bcast(problems, root=0)
    if out_problem:
        hint = "" if options.out else "; give --out DIR somewhere writable"
        raise EvaluationError(f"cannot write the report: {out_problem}{hint}")
    if tb_problem:
        log.warning("cannot write TensorBoard scalars (%s): scoring without them "
                    "(--no-tensorboard silences this)", tb_problem)
        return replace(options, tensorboard=False)
    return options


def _evaluate_bvae(options: EvalOptions, cfg, model, step: int, out_dir: Path) -> dict:
    """A β-VAE has no η: score rate (KL) against distortion over a grid of log β instead.

    The rows (``fitsae.evaluate.bvae_rd``) go to ``bvae_rd.json`` and ``bvae_rd.png``; with
    ``options.compare`` (a tunable AE's report.json) the AE, PCA and fpack curves share the plot.
    """
    from dataclasses import replace

    from fitsae.evaluate import bvae_rd

    if options.compare is not None and not Path(options.compare).is_file():
        raise EvaluationError(f"--compare {options.compare}: no such report.json")
    manifest = _manifest_for(options.data, replace(cfg.data, paths=list(options.data)),
                             out_dir / "test.manifest.jsonl", "test data")
    batches = _batches(manifest, cfg.data, int(cfg.train.seed), int(options.batch_size or cfg.data.batch_size),
                       options.max_tiles)
    report = bvae_rd.bvae_report(model, step, batches, options.logbetas, data_cfg=cfg.data, seed=int(cfg.train.seed))
    if distributed.is_root():
        _write_bvae(options, report, out_dir)
    distributed.root_print(bvae_rd.format_bvae_table(report))
    distributed.root_print(f"report: {out_dir / bvae_rd.REPORT_NAME}")
    return report


def _write_bvae(options: EvalOptions, report: dict, out_dir: Path) -> None:
    import json

    from fitsae.evaluate import bvae_rd

    compare = json.loads(Path(options.compare).read_text()) if options.compare else None
    bvae_rd.write_bvae_report(report, out_dir, compare=compare)


def _watch(options: EvalOptions) -> list[dict]:
    """Poll for checkpoints until the run's final step is scored or nothing new came for a while."""
    run_dir, out = Path(options.run_dir), options.out_dir
    world = distributed.comm()
    done: set[int] = set()
    reports = []
    scorer = _Scorer(options)
    last_new = time.monotonic()
    log.info("watching %s for checkpoints (poll %gs, give up after %gs without a new one)",
             run_dir / "checkpoints", options.poll_seconds, options.watch_timeout)
    while True:
        # Rank 0 decides what to evaluate so every rank loads the same checkpoints in step.
        pending = world.bcast(
            [s for s in _checkpoint_steps(run_dir) if s not in done] if distributed.is_root() else None, root=0
        )
        for step in pending:
            try:
                cfg, model, step = _load(run_dir, step)
            except EvaluationError as err:
                # The CheckpointManager may be deleting an old checkpoint as we look: skip it.
                log.warning("skipping checkpoint %s: %s", step, err)
                done.add(step)
                continue
            report = scorer.score(cfg, model, step, out, copy_to=out / "steps" / f"step-{step}")
            if scorer.ctx is not None:
                _announce(report, out)
            reports.append(report)
            done.add(step)
            last_new = time.monotonic()
            if step >= int(cfg.train.steps):
                log.info("scored the final checkpoint (step %d = train.steps); watch ends", step)
                scorer.close()
                return reports
        idle = time.monotonic() - last_new
        stop = world.bcast(idle >= options.watch_timeout, root=0)
        if stop:
            log.info("no new checkpoint for %.0f s; watch ends", idle)
            scorer.close()
            if not reports:
                raise EvaluationError(f"{run_dir}: no checkpoint appeared within --watch-timeout {options.watch_timeout:g}s")
            return reports
        time.sleep(options.poll_seconds)
