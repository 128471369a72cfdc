"""Images larger than the tile: grids, ranged reads of just the tile's rows, sampled statistics."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from fitsae.data import manifest as manifest_module
from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths, tile_origins
from fitsae.data.pipeline import Pipeline
from data_helpers import gaussian_field, write_raw_fits


@pytest.mark.parametrize("length,tile,stride,edge,expected", [
    (50, 16, 16, "shift", [0, 16, 32, 34]),
    (50, 16, 16, "drop", [0, 16, 32]),
    (50, 16, 16, "pad", [0, 16, 32, 48]),
    (48, 16, 16, "shift", [0, 16, 32]),
    (40, 16, 12, "shift", [0, 12, 24]),
    (10, 16, 16, "shift", []),
    (10, 16, 16, "pad", [0]),
])
def test_tile_origins(length, tile, stride, edge, expected):
    assert tile_origins(length, tile, stride, edge) == expected


def test_mosaic_tiles_read_by_rows_equal_astropy_and_cover_the_image(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(-30000, 30000, (40, 100)).astype(np.int32)
    path = write_raw_fits(tmp_path / "mosaic.fits", raw, 32, BSCALE=0.25, BZERO=7.0)
    # Ranged reads: 100 columns > 4 x 16, so each tile is fetched row by row.
    cfg = DataConfig(tile=16, batch_size=5, normalization="none", whole_file_min_bytes=0, whole_file_max_ratio=1.0)
    manifest, rejected = index_paths([str(path)], cfg)
    assert not rejected and manifest[0].tiles == (3, 7)
    pipe = Pipeline(manifest, cfg)
    reference = fits.getdata(path)
    covered = np.zeros(reference.shape, bool)
    for batch in pipe.evaluation(5):
        for tile_id, x in zip(batch["tile_id"].numpy(), batch["x"].numpy()):
            info = pipe.tile_info(tile_id)
            window = reference[info["y0"]:info["y0"] + 16, info["x0"]:info["x0"] + 16]
            np.testing.assert_array_equal(x[..., 0], window.astype(np.float32))
            covered[info["y0"]:info["y0"] + 16, info["x0"]:info["x0"] + 16] = True
    assert covered.all()


def test_large_planes_are_measured_on_sampled_rows(tmp_path, monkeypatch):
    fits.PrimaryHDU(gaussian_field(np.random.default_rng(2), (64, 64), sigma=4.0)).writeto(tmp_path / "big.fits")
    monkeypatch.setattr(manifest_module, "MAX_STATS_PIXELS", 16 * 64)
    manifest, _ = index_paths([str(tmp_path)], DataConfig(tile=16))
    row = manifest[0]
    assert row.stats_sampled and row.n_pixels == 16 * 64
    assert abs(row.noise / 4.0 - 1) < 0.2 and abs(row.median - 100.0) < 2.0
