"""The tf.data pipeline: batch contract, determinism, exact resume, sharding, bad files at run time."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits

from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest, ManifestError, index_paths, tile_origins
from fitsae.data.normalize import denormalize
from fitsae.data.pipeline import Pipeline, PipelineError
from data_helpers import gaussian_field, write_raw_fits

COMPRESSED = os.path.join(os.path.dirname(fits.__file__), "hdu", "compressed", "tests", "data")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """13 images of 16x24 (2 tiles of 16 with edge=shift... plus a 3-plane cube) → 32 tiles."""
    d = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(3)
    for i in range(13):
        fits.PrimaryHDU(gaussian_field(rng, (16, 24), background=50.0 + i, sigma=2.0)).writeto(d / f"im{i:02d}.fits")
    cube = np.stack([gaussian_field(rng, (16, 24), sigma=3.0) for _ in range(3)]).round().astype(np.int16)
    fits.PrimaryHDU(cube).writeto(d / "cube.fits")
    cfg = DataConfig(tile=16, batch_size=3)
    manifest, rejected = index_paths([str(d)], cfg)
    assert not rejected and len(manifest) == 16
    return d, manifest


def _take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def _equal(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x) and len(a) == len(b)


def test_batch_contract(dataset):
    _, manifest = dataset
    cfg = DataConfig(tile=16, crop=8, batch_size=3)
    pipe = Pipeline(manifest, cfg, seed=1)
    assert pipe.n_tiles == 32 and pipe.steps_per_epoch == 10
    batch = _take(pipe.training(), 1)[0]
    assert set(batch) == {"x", "offset", "scale", "noise", "tile_id"}
    assert batch["x"].shape == (3, 8, 8, 1) and batch["x"].dtype == np.float32
    for key in ("offset", "scale", "noise"):
        assert batch[key].shape == (3,) and batch[key].dtype == np.float32
    assert batch["tile_id"].dtype == np.int64
    np.testing.assert_array_equal(batch["noise"], 1.0)
    tiles = np.concatenate([b["x"] for b in _take(pipe.evaluation(8), 10)])
    assert abs(float(np.median(tiles))) < 0.3  # background ≈ 0 in noise units
    assert 0.7 < float(np.median(np.abs(np.diff(tiles, axis=2)))) * 1.4826 / np.sqrt(2) < 1.3  # noise ≈ 1


def test_same_seed_same_batches_other_seed_others(dataset):
    _, manifest = dataset
    cfg = DataConfig(tile=16, crop=12, batch_size=3)
    a = _take(Pipeline(manifest, cfg, seed=5).training(), 4)
    b = _take(Pipeline(manifest, cfg, seed=5).training(), 4)
    c = _take(Pipeline(manifest, cfg, seed=6).training(), 4)
    assert _equal(a, b)
    assert not _equal(a, c)


@pytest.mark.parametrize("shuffle_buffer", [0, 5])
def test_resume_reproduces_the_uninterrupted_stream(dataset, shuffle_buffer):
    _, manifest = dataset
    cfg = DataConfig(tile=16, crop=12, batch_size=3, shuffle_buffer=shuffle_buffer)
    pipe = Pipeline(manifest, cfg, seed=2)
    spe = pipe.steps_per_epoch
    full = _take(pipe.training(0), 2 * spe + 3)
    for start in (1, spe - 1, spe, spe + 4, 2 * spe + 1):
        resumed = _take(Pipeline(manifest, cfg, seed=2).training(start), 2)
        assert _equal(resumed, full[start:start + 2]), start


@pytest.mark.parametrize("shuffle_buffer", [0, 7])
def test_ranks_get_disjoint_equal_shards_covering_all_but_the_remainder(dataset, shuffle_buffer):
    _, manifest = dataset
    cfg = DataConfig(tile=16, batch_size=2, shuffle_buffer=shuffle_buffer)
    size = 3
    pipes = [Pipeline(manifest, cfg, seed=4, rank=r, size=size) for r in range(size)]
    assert {p.steps_per_epoch for p in pipes} == {32 // (2 * size)}
    used = pipes[0].steps_per_epoch * 2 * size
    left_out = []
    for epoch in range(3):
        shards = [set(p.shard(epoch)) for p in pipes]
        assert all(len(s) == used // size for s in shards)
        assert not (shards[0] & shards[1] or shards[0] & shards[2] or shards[1] & shards[2])
        union = set().union(*shards)
        assert len(union) == used
        left_out.append(set(range(32)) - union)
        # The shard is what the training stream yields, in order.
        streamed = np.concatenate([b["tile_id"] for b in _take(pipes[1].training(epoch * pipes[1].steps_per_epoch),
                                                                 pipes[1].steps_per_epoch)])
        np.testing.assert_array_equal(streamed, pipes[1].shard(epoch))
    assert len({frozenset(s) for s in left_out}) > 1  # the dropped remainder changes per epoch
    assert sorted(pipes[0].epoch_order(0)) == list(range(32))


@pytest.mark.parametrize("min_bytes", [0, 1 << 16], ids=["ranged-reads", "whole-file-reads"])
def test_evaluation_covers_every_tile_once_and_denormalizes_to_astropy(dataset, min_bytes):
    _, manifest = dataset
    for normalization, size in (("robust", 3), ("asinh", 1), ("none", 1)):
        cfg = DataConfig(tile=16, batch_size=4, normalization=normalization, whole_file_min_bytes=min_bytes)
        seen = []
        for rank in range(size):
            pipe = Pipeline(manifest, cfg, rank=rank, size=size)
            for batch in _take(pipe.evaluation(5), 100):
                assert batch["x"].shape[1:] == (16, 16, 1)
                physical = denormalize(batch["x"], batch["offset"], batch["scale"], cfg)
                for tile, values, scale in zip(batch["tile_id"], physical, batch["scale"]):
                    info = pipe.tile_info(tile)
                    data = fits.getdata(info["path"])
                    plane = data[info["plane"]] if data.ndim == 3 else data
                    ref = plane[info["y0"]:info["y0"] + 16, info["x0"]:info["x0"] + 16].astype(np.float64)
                    np.testing.assert_allclose(values[..., 0], ref, rtol=2e-6, atol=1e-4 * scale)
                seen.extend(batch["tile_id"].tolist())
        assert sorted(seen) == list(range(32))
    # edge=shift: the second tile of a 24-wide image starts at 8 (ends at the edge).
    assert tile_origins(24, 16, 16, "shift") == [0, 8]


@pytest.mark.parametrize("edge", ["shift", "pad"])
def test_evaluation_tiles_come_with_their_truth_pixel_for_pixel(tmp_path, edge):
    """A plane's TRUTH (here the image + 1000, exactly) is delivered aligned with each evaluation tile."""
    rng = np.random.default_rng(11)
    for i, shape in enumerate(((20, 27), (16, 16))):
        image = rng.integers(0, 500, shape).astype(np.float32)
        truth = fits.ImageHDU(image + 1000.0, name="TRUTH")
        fits.HDUList([fits.PrimaryHDU(image), truth]).writeto(tmp_path / f"t{i}.fits")
    fits.PrimaryHDU(rng.integers(0, 500, (16, 16)).astype(np.float32)).writeto(tmp_path / "plain.fits")
    cfg = DataConfig(tile=16, batch_size=3, normalization="none", edge=edge)
    manifest, rejected = index_paths([str(tmp_path)], cfg)
    assert rejected == [] and [r.truth_hdu for r in manifest] == [None, 1, 1]
    pipe = Pipeline(manifest, cfg)
    assert pipe.has_truth
    checked = 0
    for batch in _take(pipe.evaluation(3), 10):
        x = batch["x"][..., 0].astype(np.float64)
        truth = pipe.tile_pixels(batch["tile_id"], "truth")
        stored = pipe.tile_pixels(batch["tile_id"], "image")
        for tile, t, s, xi in zip(batch["tile_id"], truth, stored, x, strict=True):
            if pipe.tile_info(tile)["path"].endswith("plain.fits"):
                assert np.isnan(t).all()
                continue
            inside = np.isfinite(s)  # edge=pad: outside the image there is neither pixel nor truth
            np.testing.assert_array_equal(np.isfinite(t), inside)
            np.testing.assert_array_equal(t[inside], s[inside] + 1000.0)
            np.testing.assert_array_equal(xi[inside], s[inside])  # normalization none: x is the pixel
            checked += 1
    assert checked == 5


def test_vectorized_and_per_tile_decoding_give_identical_batches(tmp_path, monkeypatch):
    """Batches decoded a batch at a time (compiled kernels) equal those decoded tile by tile."""
    rng = np.random.default_rng(8)
    for i in range(7):
        raw = rng.integers(-500, 3000, (20, 36)).astype(np.int16)
        raw[i, i] = -999
        # A longer header in one file: the data no longer start at one common offset.
        extra = {f"EXTRA{k}": k for k in range(40)} if i == 3 else {}
        write_raw_fits(tmp_path / f"im{i}.fits", raw, 16, BSCALE=0.5, BZERO=100.0, BLANK=-999, **extra)
    manifest, _ = index_paths([str(tmp_path)], DataConfig(tile=16))
    assert len({row.data_offset for row in manifest}) == 2
    streams = {}
    for min_bytes, vectorize in ((0, False), (0, True), (1 << 16, True)):
        monkeypatch.setattr(Pipeline, "vectorize", vectorize)
        cfg = DataConfig(tile=16, stride=10, crop=11, batch_size=4, whole_file_min_bytes=min_bytes)
        pipe = Pipeline(manifest, cfg, seed=9)
        assert pipe.reader.vectorized == vectorize
        streams[min_bytes, vectorize] = (_take(pipe.training(3), 4), _take(pipe.evaluation(5), 20))
    reference = streams[0, False]
    for key, (training, evaluation) in streams.items():
        assert _equal(training, reference[0]) and _equal(evaluation, reference[1]), key


def test_masked_pixels_are_filled_with_the_background(tmp_path):
    data = gaussian_field(np.random.default_rng(0), (16, 16))
    data[3, 4] = np.nan
    data[7, 7] = np.inf
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    raw = np.random.default_rng(1).integers(0, 100, (16, 16)).astype(np.int16)
    raw[5, 6] = -1
    write_raw_fits(tmp_path / "b.fits", raw, 16, BLANK=-1)
    cfg = DataConfig(tile=16, batch_size=2)
    manifest, _ = index_paths([str(tmp_path)], cfg)
    batch = _take(Pipeline(manifest, cfg).evaluation(2), 1)[0]
    x = batch["x"][..., 0]
    assert np.isfinite(x).all()
    assert x[0, 3, 4] == 0.0 and x[0, 7, 7] == 0.0 and x[1, 5, 6] == 0.0


def test_edge_pad_pads_small_images(tmp_path):
    fits.PrimaryHDU(np.arange(80, dtype=np.float32).reshape(8, 10)).writeto(tmp_path / "a.fits")
    cfg = DataConfig(tile=16, batch_size=1, edge="pad", normalization="none", fill="zero")
    manifest, _ = index_paths([str(tmp_path)], cfg)
    x = _take(Pipeline(manifest, cfg).evaluation(1), 1)[0]["x"][0, ..., 0]
    np.testing.assert_array_equal(x[:8, :10], np.arange(80).reshape(8, 10))
    assert not x[8:].any() and not x[:, 10:].any()


@pytest.mark.parametrize("name", ["m13_rice.fits", "m13_gzip.fits", "m13_hcomp.fits", "compressed_with_nan.fits"])
def test_tile_compressed_hdus_go_through_astropy(name):
    path = os.path.join(COMPRESSED, name)
    tile = 12 if "nan" in name else 64
    cfg = DataConfig(tile=tile, batch_size=4, normalization="none", fill="zero")
    manifest, rejected = index_paths([path], cfg)
    assert not rejected and manifest[0].compressed
    pipe = Pipeline(manifest, cfg)
    data = fits.getdata(path)
    for batch in _take(pipe.evaluation(4), 2):
        for tile_id, x in zip(batch["tile_id"], batch["x"]):
            info = pipe.tile_info(tile_id)
            ref = data[info["y0"]:info["y0"] + tile, info["x0"]:info["x0"] + tile].astype(np.float32)
            ref[~np.isfinite(ref)] = 0
            np.testing.assert_array_equal(x[..., 0], ref)


def test_multi_extension_file_gives_one_row_per_image_hdu(tmp_path):
    rng = np.random.default_rng(0)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(gaussian_field(rng, (16, 16)), name="SCI"),
                  fits.BinTableHDU.from_columns([fits.Column("A", "J", array=[1])]),
                  fits.ImageHDU(gaussian_field(rng, (16, 16)).astype(np.float64), name="ERR")]).writeto(tmp_path / "m.fits")
    manifest, rejected = index_paths([str(tmp_path / "m.fits")], DataConfig(tile=16))
    assert not rejected
    assert [(r.hdu, r.extname) for r in manifest] == [(1, "SCI"), (3, "ERR")]
    cfg = DataConfig(tile=16, batch_size=2, normalization="none")
    x = _take(Pipeline(manifest, cfg).evaluation(2), 1)[0]["x"][..., 0]
    with fits.open(tmp_path / "m.fits") as hdul:
        np.testing.assert_array_equal(x[0], hdul[1].data)
        np.testing.assert_array_equal(x[1], hdul[3].data.astype(np.float32))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("min_bytes", [0, 1 << 16], ids=["ranged-reads", "vectorized-whole-file-reads"])
def test_files_lost_after_indexing_are_skipped_counted_and_reported_once(tmp_path, min_bytes):
    rng = np.random.default_rng(0)
    for i in range(6):
        fits.PrimaryHDU(gaussian_field(rng, (16, 16))).writeto(tmp_path / f"im{i}.fits")
    cfg = DataConfig(tile=16, batch_size=2, whole_file_min_bytes=min_bytes)
    manifest, _ = index_paths([str(tmp_path)], cfg)
    os.remove(tmp_path / "im1.fits")
    os.remove(tmp_path / "im5.fits")  # the last tile of the evaluation stream
    (tmp_path / "im4.fits").write_bytes((tmp_path / "im4.fits").read_bytes()[:3000])  # truncated
    pipe = Pipeline(manifest, cfg, seed=0)
    handler = _Records()
    logger = logging.getLogger("fitsae")
    logger.addHandler(handler)
    try:
        batches = _take(pipe.training(), 3 * pipe.steps_per_epoch)  # three epochs, no crash
        before_eval = pipe.skipped
        evaluated = _take(pipe.evaluation(4), 10)
        assert pipe.skipped - before_eval == 3  # also the tile lost at the very end
    finally:
        logger.removeHandler(handler)
    assert len(batches) == 3 * pipe.steps_per_epoch
    tiles = np.concatenate([b["tile_id"] for b in batches])
    assert not {1, 4, 5} & set(tiles.tolist())
    assert sorted(np.concatenate([b["tile_id"] for b in evaluated]).tolist()) == [0, 2, 3]
    assert before_eval >= 3 * 3  # 18 good tiles took at least six epochs, three lost tiles each
    assert len(handler.messages) == 3, handler.messages  # once per file
    joined = "\n".join(handler.messages)
    assert "im1.fits" in joined and "no longer exists" in joined
    assert "im4.fits" in joined and "changed size" in joined


@pytest.mark.parametrize("min_bytes,vectorize", [(0, True), (1 << 16, True), (1 << 16, False)],
                         ids=["ranged-reads", "vectorized-whole-file-reads", "per-tile-whole-file-reads"])
def test_every_file_lost_after_indexing_fails_clearly_instead_of_stalling(tmp_path, monkeypatch, min_bytes, vectorize):
    monkeypatch.setattr(Pipeline, "vectorize", vectorize)
    rng = np.random.default_rng(0)
    for i in range(5):
        fits.PrimaryHDU(gaussian_field(rng, (16, 16))).writeto(tmp_path / f"im{i}.fits")
    cfg = DataConfig(tile=16, batch_size=2, whole_file_min_bytes=min_bytes)
    manifest, _ = index_paths([str(tmp_path)], cfg)
    pipe = Pipeline(manifest, cfg, seed=0)
    assert len(_take(pipe.training(), 1)) == 1
    for i in range(5):
        os.remove(tmp_path / f"im{i}.fits")
    stalled = r"none of the last\] \[\d+\] \[tiles .* could be read. The input files were deleted"
    for start in (0, 1):  # also when resumed mid-epoch (the first epoch's share is then short)
        with pytest.raises(tf.errors.InvalidArgumentError, match=stalled):
            _take(pipe.training(start), 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=stalled + r".*im0\.fits"):
        _take(pipe.evaluation(2), 1)


def test_too_few_tiles_for_the_ranks_is_a_clear_error(dataset):
    _, manifest = dataset
    pipe = Pipeline(manifest, DataConfig(tile=16, batch_size=8), size=5)
    with pytest.raises(PipelineError, match="cannot fill one batch"):
        pipe.training()


def test_manifest_round_trip_and_corrupt_line(dataset, tmp_path):
    _, manifest = dataset
    manifest.save(tmp_path / "m.jsonl")
    assert Manifest.load(tmp_path / "m.jsonl") == manifest
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    (tmp_path / "bad.jsonl").write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]))
    with pytest.raises(ManifestError, match="line 3"):
        Manifest.load(tmp_path / "bad.jsonl")


def test_manifests_that_name_the_median_offset_still_load(dataset, tmp_path):
    _, manifest = dataset
    manifest.save(tmp_path / "m.jsonl")
    text = (tmp_path / "m.jsonl").read_text()
    assert '"median": ' in text and '"offset": ' not in text
    (tmp_path / "old.jsonl").write_text(text.replace('"median": ', '"offset": '))
    assert Manifest.load(tmp_path / "old.jsonl") == manifest


@pytest.mark.parametrize("normalization", ["none", "asinh"])
def test_evaluation_batches_carry_each_planes_sky_level_whatever_the_normalization(dataset, normalization):
    """The sky the error bands are measured from is the plane's median, not the (zero) offset of ``none``."""
    from fitsae.data.evalset import evaluation_batches

    _, manifest = dataset
    cfg = DataConfig(tile=16, batch_size=3, normalization=normalization)
    seen = {}
    for batch in evaluation_batches(manifest, cfg, seed=0, batch_size=5, limit=None):
        for tile, background in zip(batch["tile_id"], batch["background"], strict=True):
            seen[int(tile)] = background
    pipe = Pipeline(manifest, cfg, seed=0)
    assert sorted(seen) == list(range(32))
    assert all(seen[t] == manifest[int(pipe.tile_row[t])].median for t in seen)
    assert min(seen.values()) > 40  # skies of 50 + i and 100, not the zero offset of ``none``
