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


def test_mnist_without_a_path_reads_only_the_keras_cache_and_never_downloads(tmp_path, monkeypatch, capsys):
    """No --mnist and no cached file: a clear error naming the path looked at, no network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert simulate_cli.main(["--kind", "mnist", "--n", "4", "--out", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "home" / ".keras" / "datasets" / "mnist.npz") in capsys.readouterr().err
    cache = tmp_path / "home" / ".keras" / "datasets"
    cache.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(cache / "mnist.npz", x_train=images, y_train=np.arange(5))
    assert simulate_cli.main(["--kind", "mnist", "--n", "4", "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out" / "mnist.fits"), images[:4])


def test_cli_writes_files_and_rejects_bad_arguments(tmp_path, capsys):
    assert simulate_cli.main(["--kind", "toy", "--n", "2", "--size", "16", "--out", str(tmp_path), "--seed", "3"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_00000.fits", "toy_00001.fits"]
    assert simulate_cli.main(["--kind", "toy", "--n", "0", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        simulate_cli.main(["--kind", "nope", "--n", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_simulated_fields_carry_truth_and_sigma_planes_that_index_does_not_take_as_images(tmp_path):
    from fitsae.data.simulate import toy_field

    files = simulate("toy", 2, 24, tmp_path / "toy", seed=3)
    with fits.open(files[1]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "TRUTH", "SIGMA"]
        image, truth, sigma = (np.asarray(hdul[i].data) for i in range(3))
    field = toy_field(np.random.default_rng([3, 1]), 24)
    np.testing.assert_array_equal(truth, field.truth)
    assert hdul["TRUTH"].header["BITPIX"] == hdul["SIGMA"].header["BITPIX"] == -32 and np.all(sigma == 1.0)
    assert abs(np.std(image - truth) - 1.0) < 0.15  # the noise drawn around the truth has the σ the map says
    manifest, rejected = index_paths([str(tmp_path / "toy")], DataConfig(tile=24))
    assert rejected == [] and len(manifest) == 2
    assert [(r.hdu, r.truth_hdu, r.sigma_hdu) for r in manifest] == [(0, 1, 2), (0, 1, 2)]
    assert "2 with a TRUTH plane" in manifest.summary()

    (cube,) = simulate("toy", 3, 24, tmp_path / "cube", seed=3, cube=True)
    with fits.open(cube) as hdul:
        assert hdul["TRUTH"].data.shape == hdul["SIGMA"].data.shape == (3, 24, 24)
    manifest, rejected = index_paths([str(cube)], DataConfig(tile=24))
    assert rejected == [] and [(r.plane, r.truth_hdu) for r in manifest] == [(0, 1), (1, 1), (2, 1)]


def test_galsim_sigma_map_is_the_true_noise_and_int16_truth_the_expected_adu(tmp_path):
    (path,) = simulate("galsim", 1, 128, tmp_path, seed=2, dtype="int16")
    with fits.open(path) as hdul:
        image = hdul[0].data.astype(np.float64)
        truth, sigma = hdul["TRUTH"].data.astype(np.float64), hdul["SIGMA"].data.astype(np.float64)
    assert hdul[0].header["BITPIX"] == 16 and not np.array_equal(truth, np.rint(truth))
    z = (image - truth) / sigma
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.05
    bright = sigma > 2 * sigma.min()  # sources' own Poisson noise at least 3× the sky's variance
    assert bright.sum() > 100 and abs(z[bright].std() - 1.0) < 0.15
    assert np.all(sigma >= np.sqrt(25.0)) and sigma.max() > 3 * sigma.min()


def test_truth_planes_that_fit_no_image_are_rejected_with_the_reason_and_old_files_still_index(tmp_path):
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(image[:4], name="TRUTH")]).writeto(tmp_path / "shape.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="TRUTH"), fits.ImageHDU(image, name="SCI")]).writeto(
        tmp_path / "orphan.fits")
    fits.PrimaryHDU(image).writeto(tmp_path / "old.fits")
    manifest, rejected = index_paths([str(tmp_path)], DataConfig(tile=8))
    assert sorted((r.path.split("/")[-1], r.hdu, r.truth_hdu) for r in manifest) == [
        ("old.fits", 0, None), ("orphan.fits", 2, None), ("shape.fits", 0, None)]
    reasons = {(r["path"].split("/")[-1], r["hdu"]): r["reason"] for r in rejected}
    assert reasons.keys() == {("shape.fits", 1), ("orphan.fits", 1)}
    assert "TRUTH extension has shape [4, 8]" in reasons[("shape.fits", 1)]
    assert "follows no image HDU" in reasons[("orphan.fits", 1)]


def test_manifests_written_before_truth_planes_still_load(tmp_path):
    import json

    from fitsae.data.manifest import Manifest

    simulate("toy", 1, 16, tmp_path / "d", seed=1)
    manifest, _ = index_paths([str(tmp_path / "d")], DataConfig(tile=16))
    record = json.loads(manifest[0].to_json())
    del record["truth_hdu"], record["sigma_hdu"]
    (tmp_path / "old.jsonl").write_text(json.dumps(record) + "\n")
    (row,) = Manifest.load(tmp_path / "old.jsonl")
    assert row.truth_hdu is None and row.path == manifest[0].path
