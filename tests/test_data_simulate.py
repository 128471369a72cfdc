"""Simulators: deterministic, the NOISE keyword is right, the formats are what the CLI promises."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from fitsae.cli import simulate as simulate_cli
from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths
from fitsae.data.normalize import robust_stats
from fitsae.data.simulate import simulate


def test_toy_is_deterministic_and_its_noise_is_recovered(tmp_path):
    a = simulate("toy", 3, 48, tmp_path / "a", seed=4)
    b = simulate("toy", 3, 48, tmp_path / "b", seed=4)
    c = simulate("toy", 3, 48, tmp_path / "c", seed=5)
    assert [p.name for p in a] == ["toy_00000.fits", "toy_00001.fits", "toy_00002.fits"]
    for x, y, z in zip(a, b, c, strict=True):
        assert np.array_equal(fits.getdata(x), fits.getdata(y))
        assert not np.array_equal(fits.getdata(x), fits.getdata(z))
    cube = simulate("toy", 3, 48, tmp_path / "cube", seed=4, cube=True)
    np.testing.assert_array_equal(fits.getdata(cube[0]), np.stack([fits.getdata(p) for p in a]))
    manifest, rejected = index_paths([str(tmp_path / "a")], DataConfig(tile=48))
    assert not rejected
    assert [(row.noise, row.noise_source) for row in manifest] == [(1.0, "header")] * 3
    # The header is right: the pixels' own noise (estimated from 96² fields) is its NOISE.
    bigger = simulate("toy", 3, 96, tmp_path / "big", seed=4)
    assert abs(np.median([robust_stats(fits.getdata(p)).noise for p in bigger]) / 1.0 - 1) < 0.05


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_galsim_fields(tmp_path, dtype):
    files = simulate("galsim", 4, 128, tmp_path, seed=1, dtype=dtype)
    with fits.open(files[0]) as hdul:
        header, data = hdul[0].header, hdul[0].data
        if dtype == "int16":
            assert header["BITPIX"] == 16 and header["BZERO"] == 32768 and data.dtype == np.uint16
        else:
            assert header["BITPIX"] == -32
        noise = header["NOISE"]
    assert noise == pytest.approx(15.0)  # √(sky + read noise²) = √(200 + 5²)
    assert data.max() > data.mean() + 20 * noise  # sources well above the sky noise
    manifest, _ = index_paths([str(p) for p in files], DataConfig(tile=128))
    assert [(r.noise, r.noise_source) for r in manifest] == [(noise, "header")] * 4
    # NOISE is the pixels' noise: the estimate from the fields (a few % high from the sources'
    # own Poisson noise; measured 1.02–1.05) agrees, where NOISE without the read noise (14.1)
    # would be 6 % off.
    quantum = 1.0 if dtype == "int16" else None
    ratios = [robust_stats(fits.getdata(p), quantum=quantum).noise / noise for p in files]
    assert abs(np.median(ratios) - 1) < 0.05, ratios


def test_digits_cube_with_labels(tmp_path):
    (path,) = simulate("digits", 20, 0, tmp_path)
    with fits.open(path) as hdul:
        assert hdul[0].data.shape == (20, 8, 8) and hdul[0].data.dtype == np.uint8
        assert hdul["LABELS"].data["LABEL"].tolist()[:3] == [0, 1, 2]
    manifest, rejected = index_paths([str(path)], DataConfig(tile=8))
    assert not rejected and len(manifest) == 20
    # Noiseless 8-bit planes: the header's quantization σ, not the strokes' differences.
    assert {(round(r.noise, 12), r.noise_source) for r in manifest} == {(round(1 / np.sqrt(12), 12), "header")}


def test_mnist_from_a_local_npz(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=np.arange(5), x_test=images, y_test=np.arange(5))
    assert simulate_cli.main(["--kind", "mnist", "--n", "4", "--out", str(tmp_path / "out"),
                              "--mnist", str(tmp_path / "mnist.npz")]) == 0
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out" / "mnist.fits"), images[:4])
    assert simulate_cli.main(["--kind", "mnist", "--n", "4", "--out", str(tmp_path / "out"),
                              "--mnist", str(tmp_path / "missing.npz")]) == 2


def test_cli_writes_files_and_rejects_bad_arguments(tmp_path, capsys):
    assert simulate_cli.main(["--kind", "toy", "--n", "2", "--size", "16", "--out", str(tmp_path), "--seed", "3"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_00000.fits", "toy_00001.fits"]
    assert simulate_cli.main(["--kind", "toy", "--n", "0", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        simulate_cli.main(["--kind", "nope", "--n", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
