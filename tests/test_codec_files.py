"""``fitsae compress`` / ``decompress``: entropy-coded containers that decode to the encoder's μ,
keep the source's header, pixels masks and type, survive their checkpoint, and fail loudly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import ASTROPY_DATA, CONV, CONV_RATE, DENSE, clean_env, shared_run, train_run, write_fields
from fitsae.cli import main

M13 = ASTROPY_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits"
COMP = ASTROPY_DATA / "tests" / "data" / "comp.fits"


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv", CONV)


@pytest.fixture(scope="module")
def rate_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv_rate", CONV_RATE, steps=40, checkpoint_every=20)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """A linear dense run on 8×8 tiles (C = 6), 10 steps."""
    return shared_run(tmp_path_factory, "dense", DENSE, tile=8, steps=10, checkpoint_every=10)


def _odd_image(path: Path, wcs: bool = False) -> Path:
    """A 30×27 field (not a multiple of the stride or tile) with two NaN pixels."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:30, :27]
    img = 100 + 2 * rng.normal(size=(30, 27)) + 60 * np.exp(-((yy - 12) ** 2 + (xx - 9) ** 2) / 8.0)
    img[3, 4] = img[20, 20] = np.nan
    hdu = fits.PrimaryHDU(img.astype(np.float32))
    if wcs:
        hdu.header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 14.0, "CRPIX2": 15.0,
                           "CRVAL1": 250.4, "CRVAL2": 36.46, "CDELT1": -1e-4, "CDELT2": 1e-4, "OBJECT": "odd"})
    hdu.writeto(path)
    return path


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _compress(run, source, out, capsys, *extra):
    code, out_text, err = _cli(["compress", "--run-dir", str(run), *extra, str(source), "--out", str(out)], capsys)
    assert code == 0, err
    return out_text


def _direct_mu(run: Path, container: Path) -> np.ndarray:
    """The plane's μ decoded from the container's integers straight through the model (one tile)."""
    import tensorflow as tf

    from fitsae.codec.artifact import load_frozen
    from fitsae.entropy import decode_latents
    from fitsae.data.normalize import denormalize

    with fits.open(container) as hdul:
        frozen = load_frozen(next((run / "models").iterdir()))
        assert frozen.digest == hdul[0].header["MODDIG"]
        tiles, head = hdul["TILES", 1].data, hdul["TILES", 1].header
        (row,) = tiles
        model, tables = frozen.model, frozen.tables
        if model.image_shape[0] is None:  # conv: the 30×27 tile padded to the stride
            grid = (-(-30 // model.stride), -(-27 // model.stride))
        else:
            grid = ()
        k = decode_latents(tables, np.asarray(row["DATA"], np.uint8).tobytes(), int(row["NESC"]),
                           grid + (int(row["ETA"]),))
        full = np.zeros(grid + (model.latent_channels,), np.float32)
        full[..., : k.shape[-1]] = k * tables.step[: k.shape[-1]]
        mu = np.asarray(model.decode_mean(tf.constant(full[None])))[0, ..., 0]
        if model.image_shape[0] is not None:
            mu = np.pad(mu, ((0, 30 - mu.shape[0]), (0, 27 - mu.shape[1])))  # dense: one 8×8 tile
        phys = denormalize(mu[:30, :27].astype(np.float64), np.float64(head["OFFSET"]), np.float64(head["SCALE"]),
                           frozen.cfg.data)
        return np.clip(phys, row["LO"], row["HI"]).astype(np.float32)


@pytest.mark.parametrize("which", ["conv", "rate"])
def test_decompress_gives_the_mu_the_encoder_coded_with_nan_where_nothing_was_measured(
        which, conv_run, rate_run, tmp_path, capsys, caplog):
    run = (conv_run if which == "conv" else rate_run)["run"]
    source = _odd_image(tmp_path / "odd.fits")
    container = tmp_path / "odd.fae.fits"
    out = _compress(run, source, container, capsys, "--eta", "2", "--fixed-eta")
    assert "bits/pixel coded" in out and "RMSE/noise" in out
    with fits.open(container) as hdul:
        head, tiles = hdul[0].header, hdul["TILES", 1]
        assert head["FAEFMT"] == "fitsae-codec-2" and head["ETA"] == 2 and head["ETASEL"] == "fixed"
        assert head["TABLES"] == ("prior" if which == "rate" else "fitted")
        assert list(tiles.data["ETA"]) == [2] and tiles.header["NFILLED"] == 2
    decoded = tmp_path / "odd.decoded.fits"
    code, _, err = _cli(["decompress", str(container), "--out", str(decoded)], capsys)
    assert code == 0, err
    assert "differs from what the encoder computed" not in caplog.text
    with fits.open(decoded) as hdul, fits.open(source) as src:
        mu = hdul[0].data
        assert mu.shape == (30, 27) and mu.dtype.kind == "f"
        np.testing.assert_array_equal(np.isnan(mu), np.isnan(src[0].data))
    expected = _direct_mu(run, container)
    measured = ~np.isnan(mu)
    np.testing.assert_allclose(mu[measured], expected[measured], rtol=1e-6)


def _decoded_error(run: Path, source: Path, eta: int, select: str, tmp_path: Path) -> tuple[int, float]:
    """Channels kept and the decoded μ's squared error on the measured pixels, via the library."""
    from fitsae.codec import compress_files, decompress_file

    container = tmp_path / f"{select}{eta}.fae.fits"
    (summary,) = compress_files(run, [str(source)], eta, container, select=select)
    decompress_file(container, tmp_path / f"{select}{eta}.decoded.fits")
    with fits.open(source) as src, fits.open(tmp_path / f"{select}{eta}.decoded.fits") as dec:
        x, mu = np.asarray(src[0].data, np.float64), np.asarray(dec[0].data, np.float64)
    measured = np.isfinite(x)
    return summary["eta_kept"][0], float(np.sum((x[measured] - mu[measured]) ** 2))


def _median_only_error(pixels: np.ndarray) -> float:
    """Squared error of sending a tile's median alone (the lower median, as float32)."""
    values = np.sort(np.asarray(pixels, np.float64)[np.isfinite(pixels)])
    median = float(np.float32(values[(values.size - 1) // 2]))
    return float(np.sum((values - median) ** 2))


@pytest.mark.parametrize("which", ["conv", "dense"])
def test_budget_keeps_the_channels_that_decode_best(which, conv_run, dense_run, tmp_path):
    """At budget η a tile keeps the η′ ≤ η whose decoded μ is closest to the image, η′ = 0 (the
    median alone) included: its error is the smallest of those, so it never grows with the budget
    (here: one-tile planes)."""
    run = (conv_run if which == "conv" else dense_run)["run"]
    source = tmp_path / "one.fits"
    fits.PrimaryHDU(fits.getdata(_odd_image(tmp_path / "odd.fits"))[:8, :8]).writeto(source)
    channels = CONV["latent_channels"] if which == "conv" else DENSE["latent_channels"]
    fixed = [_decoded_error(run, source, eta, "fixed", tmp_path) for eta in range(1, channels + 1)]
    assert [kept for kept, _ in fixed] == list(range(1, channels + 1))
    errors = [_median_only_error(fits.getdata(source))] + [e for _, e in fixed]  # index = η′
    previous = np.inf
    for eta in range(1, channels + 1):
        kept, error = _decoded_error(run, source, eta, "best", tmp_path)
        # float32 μ round-trips through FITS: equal to the best candidate's error up to that precision
        assert error == pytest.approx(min(errors[:eta + 1]), rel=1e-5)
        assert kept == int(np.argmin(errors[:eta + 1]))
        assert error <= previous * (1 + 1e-5)
        previous = error


def _saturated_frame(path: Path) -> Path:
    """A 32×32 sky the model never saw the like of: a saturated bleed column at 60 000 counts, a
    dead column at 0 and hot pixels, over a 100-count background with σ = 2 (training: 100 ± 2
    with sources of at most 80 counts)."""
    rng = np.random.default_rng(11)
    img = 100.0 + rng.normal(scale=2.0, size=(32, 32))
    img[:, 5] = 60000.0
    img[10:, 24] = 0.0
    img[[3, 20, 27], [14, 9, 30]] = 30000.0
    fits.PrimaryHDU(img.astype(np.float32)).writeto(path)
    return path


def test_the_codec_is_never_worse_than_the_median_alone(conv_run, tmp_path, capsys, caplog):
    """Issue 13, item 11: η′ = 0 (the tile's median, 32 bits) is a budget candidate, so on a frame
    far outside training no tile decodes worse than sending its median alone, at any budget; the
    background-only tiles round-trip through the container and decode without a checksum warning."""
    source = _saturated_frame(tmp_path / "saturated.fits")
    pixels = fits.getdata(source).astype(np.float64)
    tiles = [(y, x) for y in (0, 16) for x in (0, 16)]
    median_only = [_median_only_error(pixels[y:y + 16, x:x + 16]) for y, x in tiles]
    background_tiles = 0
    for eta in range(1, CONV["latent_channels"] + 1):
        container, decoded = tmp_path / f"s{eta}.fae.fits", tmp_path / f"s{eta}.fits"
        _compress(conv_run["run"], source, container, capsys, "--eta", str(eta), "--tile", "16")
        code, _, err = _cli(["decompress", str(container), "--out", str(decoded)], capsys)
        assert code == 0, err
        assert "differs from what the encoder computed" not in caplog.text
        mu = fits.getdata(decoded).astype(np.float64)
        with fits.open(container) as hdul:
            rows = {(int(r["Y0"]), int(r["X0"])): r for r in hdul["TILES", 1].data}
        for (y, x), bound in zip(tiles, median_only, strict=True):
            error = float(np.sum((pixels[y:y + 16, x:x + 16] - mu[y:y + 16, x:x + 16]) ** 2))
            assert error <= bound * (1 + 1e-6), (eta, (y, x), error, bound)
            if rows[(y, x)]["ETA"] == 0:
                background_tiles += 1
                assert len(rows[(y, x)]["DATA"]) == 4  # the median, one float32
                assert error == pytest.approx(bound, rel=1e-6)
    assert background_tiles > 0  # the fixture does send some tiles as their median alone


def test_a_real_int16_image_keeps_its_header_and_type(conv_run, tmp_path, capsys):
    out_dir = tmp_path / "c"
    _compress(conv_run["run"], M13, out_dir, capsys, "--eta", "1", "--tile", "64")
    with fits.open(out_dir / "m13.fae.fits") as hdul:
        tiles = hdul["TILES", 1].data
        assert len(tiles) == 25 and set(tiles["H"]) == {64, 44}  # 300 = 4×64 + 44
    code, _, err = _cli(["decompress", str(out_dir), "--out", str(tmp_path / "d"), "--sigma"], capsys)
    assert code == 0, err
    with fits.open(tmp_path / "d" / "m13.decoded.fits") as dec, fits.open(M13) as src:
        assert dec[0].data.shape == (300, 300) and dec[0].header["BITPIX"] == 16
        for key in ("CRPIX1", "CRVAL2", "CTYPE1", "CDELT1", "EQUINOX"):
            assert dec[0].header[key] == src[0].header[key], key
        assert np.all(dec["SIGMA", 1].data > 0)


def test_a_section_decodes_only_its_tiles_and_equals_the_full_decode(conv_run, tmp_path, capsys, monkeypatch):
    source = tmp_path / "big.fits"
    rng = np.random.default_rng(3)
    hdu = fits.PrimaryHDU((100 + 2 * rng.normal(size=(100, 90))).astype(np.float32))
    hdu.header.update({"CRPIX1": 45.0, "CRPIX2": 50.0})
    hdu.writeto(source)
    container = tmp_path / "big.fae.fits"
    _compress(conv_run["run"], source, container, capsys, "--eta", "2", "--tile", "32")
    assert _cli(["decompress", str(container), "--out", str(tmp_path / "full.fits")], capsys)[0] == 0
    from fitsae.codec import files

    decoded_tiles = []
    real = files._decode_tile
    monkeypatch.setattr(files, "_decode_tile", lambda *a, **k: decoded_tiles.append(a[4]) or real(*a, **k))
    code, _, err = _cli(["decompress", str(container), "--section", "20:70,33:80", "--out",
                         str(tmp_path / "cut.fits")], capsys)
    assert code == 0, err
    full, cut = fits.getdata(tmp_path / "full.fits"), fits.getheader(tmp_path / "cut.fits")
    np.testing.assert_array_equal(fits.getdata(tmp_path / "cut.fits"), full[20:70, 33:80])
    assert (cut["CRPIX1"], cut["CRPIX2"]) == (45.0 - 33, 50.0 - 20)
    assert sorted((t.y0, t.x0) for t in decoded_tiles) == [(y, x) for y in (0, 32, 64) for x in (32, 64)]


def test_integer_blank_pixels_and_bzero_survive(conv_run, tmp_path, capsys):
    rng = np.random.default_rng(4)
    adu = np.clip(1000 + 30 * rng.normal(size=(40, 40)), 0, 65535).astype(np.uint16)
    hdu = fits.PrimaryHDU(adu)  # astropy writes BITPIX 16, BZERO 32768
    source = tmp_path / "int.fits"
    hdu.writeto(source)
    with fits.open(source, mode="update", do_not_scale_image_data=True) as hdul:
        raw = hdul[0].data.copy()
        raw[5, 6] = raw[30, 2] = -32768
        hdul[0].data = raw
        hdul[0].header["BLANK"] = -32768
    container = tmp_path / "int.fae.fits"
    _compress(conv_run["run"], source, container, capsys, "--eta", "4")
    assert _cli(["decompress", str(container), "--out", str(tmp_path / "int.decoded.fits")], capsys)[0] == 0
    with fits.open(tmp_path / "int.decoded.fits", do_not_scale_image_data=True) as dec:
        head, raw_out = dec[0].header, dec[0].data
        assert head["BITPIX"] == 16 and head["BZERO"] == 32768 and head["BLANK"] == -32768
        assert set(zip(*np.nonzero(raw_out == -32768))) == {(5, 6), (30, 2)}


def test_a_container_outlives_the_checkpoint_it_came_from(conv_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(conv_run["run"], run, ignore=shutil.ignore_patterns("models"))
    source = _odd_image(tmp_path / "odd.fits")
    _compress(run, source, tmp_path / "odd.fae.fits", capsys, "--eta", "3")
    shutil.rmtree(run / "checkpoints")  # as checkpoint rotation would
    code, _, err = _cli(["decompress", str(tmp_path / "odd.fae.fits"), "--out", str(tmp_path / "o.fits")], capsys)
    assert code == 0, err
    shutil.move(run / "models", tmp_path / "elsewhere")
    code, _, err = _cli(["decompress", str(tmp_path / "odd.fae.fits"), "--out", str(tmp_path / "p.fits")], capsys)
    assert code == 2 and str(run.resolve()) in err and "checkpoint step 20" in err and "--model" in err
    assert not (tmp_path / "p.fits").exists()
    code, _, err = _cli(["decompress", str(tmp_path / "odd.fae.fits"), "--model", str(tmp_path / "elsewhere"),
                         "--out", str(tmp_path / "q.fits")], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(fits.getdata(tmp_path / "q.fits"), fits.getdata(tmp_path / "o.fits"))


def _damaged(container: Path, tmp_path: Path) -> dict:
    data = container.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) - 3000] ^= 0x04  # inside the last HDU's data
    rng = np.random.default_rng(0)
    variants = {"truncated": data[: len(data) - 3000], "flipped": bytes(flipped),
                "random": rng.integers(0, 256, len(data), dtype=np.uint8).tobytes(), "empty": b""}
    paths = {}
    for name, content in variants.items():
        paths[name] = tmp_path / f"{name}.fae.fits"
        paths[name].write_bytes(content)
    return paths


def test_damaged_containers_are_one_line_errors_and_write_nothing(conv_run, tmp_path, capsys):
    container = tmp_path / "odd.fae.fits"
    _compress(conv_run["run"], _odd_image(tmp_path / "odd.fits"), container, capsys, "--eta", "3")
    for name, path in _damaged(container, tmp_path).items():
        target = tmp_path / f"{name}.out.fits"
        code, _, err = _cli(["decompress", str(path), "--out", str(target)], capsys)
        assert code == 2, name
        assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not target.exists() and not list(tmp_path.glob(f".{name}*")), name
    code, _, err = _cli(["decompress", str(tmp_path / "flipped.fae.fits"), "--out", str(tmp_path / "x.fits")], capsys)
    assert "checksum" in err


def test_a_frozen_model_that_was_altered_is_refused(conv_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(conv_run["run"], run, ignore=shutil.ignore_patterns("models"))
    _compress(run, _odd_image(tmp_path / "odd.fits"), tmp_path / "odd.fae.fits", capsys, "--eta", "3")
    (folder,) = (run / "models").iterdir()
    from fitsae.codec.artifact import load_frozen

    import tensorflow as tf

    frozen = load_frozen(folder)
    frozen.model.weights[0].assign(frozen.model.weights[0] + 1.0)
    tf.train.Checkpoint(model=frozen.model).write(str(folder / "weights"))
    code, _, err = _cli(["decompress", str(tmp_path / "odd.fae.fits"), "--out", str(tmp_path / "o.fits")], capsys)
    assert code == 2 and "altered" in err and not (tmp_path / "o.fits").exists()


def test_bad_inputs_are_clear_errors(conv_run, tmp_path, capsys):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(plain)
    code, _, err = _cli(["decompress", str(plain), "--out", str(tmp_path / "o.fits")], capsys)
    assert code == 2 and "not a fitsae container" in err
    code, _, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "9", str(plain),
                         "--out", str(tmp_path / "c.fits")], capsys)
    assert code == 2 and "must be in 1..4" in err
    code, _, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "1", str(tmp_path / "none"),
                         "--out", str(tmp_path / "c.fits")], capsys)
    assert code == 2 and "nothing to compress" in err
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(plain, tmp_path / sub / "same.fits")
    code, _, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "1", str(tmp_path / "a"),
                         str(tmp_path / "b"), "--out", str(tmp_path / "both")], capsys)
    assert code == 2 and "would both be written to" in err and not (tmp_path / "both").exists()


def kept_and_payload(out: Path) -> tuple[dict, int]:
    """Tiles per η′ kept and coded bytes, over the one-tile containers in ``out``."""
    kept, payload = Counter(), 0
    for container in out.glob("*.fae.fits"):
        with fits.open(container) as hdul:
            (tile,) = hdul["TILES", 1].data
            kept[str(tile["ETA"])] += 1
            payload += len(tile["DATA"])
    return dict(kept), payload


def test_compress_and_evaluate_choose_the_same_channels_and_bytes(conv_run, tmp_path, capsys):
    """Evaluation scores tiles through the codec's own encoder: on planes that are one tile each,
    both keep the same η′ and count the same coded bytes."""
    fields = write_fields(tmp_path / "fields", 8, seed=5, size=16)
    code, _, err = _cli(["evaluate", "--run-dir", str(conv_run["run"]), "--data", str(fields), "--out",
                         str(tmp_path / "eval"), "--fpack-tiles", "0", "--no-plots", "--no-tensorboard"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["data"]["n_tiles"] == 8
    for row in report["results"]:
        out = tmp_path / f"c{row['eta']}"
        _compress(conv_run["run"], fields, out, capsys, "--eta", str(row["eta"]))
        kept, payload = kept_and_payload(out)
        assert kept == row["ae"]["tiles_by_eta_kept"], row["eta"]
        assert 8.0 * payload / (8 * 16 * 16) == pytest.approx(row["ae"]["bits_per_pixel_coded"], rel=1e-12)


def test_the_tables_estimate_and_the_coded_bytes_agree(rate_run, tmp_path, capsys):
    """For a model trained for rate, bits predicted by its frozen prior ≈ bytes written (3 %)."""
    out = tmp_path / "c"
    _compress(rate_run["run"], rate_run["test"], out, capsys, "--eta", "4", "--fixed-eta")
    estimated = coded = 0.0
    for container in out.glob("*.fae.fits"):
        with fits.open(container) as hdul:
            tiles = hdul["TILES", 1].data
            estimated += float(np.sum(tiles["BITSEST"]))
            coded += 8.0 * sum(len(d) for d in tiles["DATA"])
    assert coded == pytest.approx(estimated, rel=0.03)


def _decode_in_subprocess(container: Path, out: Path, threads: str) -> None:
    env = clean_env()
    env.pop("FITSAE_THREADS", None)
    env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    proc = subprocess.run([sys.executable, "-m", "fitsae", "decompress", str(container), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("source", [M13, COMP, "galsim"], ids=["m13", "comp", "galsim"])
def test_a_fresh_process_with_other_thread_settings_decodes_the_same_image(source, rate_run, tmp_path, capsys):
    if source == "galsim":
        from fitsae.data.simulate import simulate

        (source,) = simulate("galsim", 1, 256, tmp_path / "galsim", seed=3)
    container = tmp_path / "c.fae.fits"
    _compress(rate_run["run"], source, container, capsys, "--eta", "4", "--tile", "128")
    _decode_in_subprocess(container, tmp_path / "one.fits", "1")
    _decode_in_subprocess(container, tmp_path / "two.fits", "2")
    with fits.open(tmp_path / "one.fits") as a, fits.open(tmp_path / "two.fits") as b:
        (hdu_a,) = [h for h in a if h.data is not None]
        (hdu_b,) = [h for h in b if h.data is not None]
        np.testing.assert_array_equal(hdu_a.data, hdu_b.data)


def _v1_container(run: Path, path: Path) -> None:
    """A container as fitsae wrote them before the coder: float32 latents, model named by run/step."""
    import tensorflow as tf

    from fitsae.codec.artifact import weights_digest
    from fitsae.train.checkpoints import load_model

    _, model, step = load_model(run)
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 1)).astype(np.float32)
    z = np.asarray(model.encode(tf.constant(x), tf.constant([2], tf.int32)))[0, ..., :2]
    primary = fits.PrimaryHDU()
    primary.header.update({"FAEFMT": "fitsae-latent-1", "ETA": 2, "NPLANES": 1, "CKPTSTEP": step,
                           "WDIGEST": weights_digest(model), "RUNDIR": str(run)})
    latent = fits.ImageHDU(np.ascontiguousarray(z.transpose(2, 0, 1)), name="LATENT", ver=1)
    latent.header.update({"SRCFILE": "x.fits", "SRCHDU": 0, "SRCPLANE": 0, "ORIGH": 16, "ORIGW": 16,
                          "OFFSET": 100.0, "SCALE": 2.0, "NFILLED": 0, "ETA": 2})
    fits.HDUList([primary, latent]).writeto(path)


def test_version_1_containers_still_decode(conv_run, tmp_path, capsys):
    container = tmp_path / "old.fae.fits"
    _v1_container(conv_run["run"], container)
    code, _, err = _cli(["decompress", str(container), "--out", str(tmp_path / "old.fits")], capsys)
    assert code == 0, err
    with fits.open(tmp_path / "old.fits") as hdul:
        assert hdul["MU", 1].data.shape == (16, 16) and hdul["MU", 1].header["ETA"] == 2
    data = container.read_bytes()
    (tmp_path / "cut.fae.fits").write_bytes(data[: len(data) - 2880 + 64])  # cut inside its LATENT data
    code, _, err = _cli(["decompress", str(tmp_path / "cut.fae.fits"), "--out", str(tmp_path / "cut.fits")], capsys)
    assert code == 2 and "cut.fae.fits" in err and "Traceback" not in err


@pytest.mark.mpi
def test_two_ranks_share_the_files_and_write_what_one_process_writes(conv_run, tmp_path, capsys, mpirun):
    """``mpirun -np 2 fitsae compress`` / ``decompress``: every file is coded and decoded once, by
    one rank, to the very bytes and pixels a single process gives; rank 0 lists the files in order."""
    sources = write_fields(tmp_path / "in", 3, seed=4)
    names = sorted(p.name for p in sources.iterdir())
    _compress(conv_run["run"], sources, tmp_path / "one", capsys, "--eta", "2")
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "compress", "--run-dir", str(conv_run["run"]), "--eta", "2",
                      str(sources), "--out", str(tmp_path / "two")], env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = [line.split(" -> ")[0] for line in proc.stdout.splitlines() if " -> " in line]
    assert listed == [str(sources / n) for n in names]
    for name in names:
        container = name.replace(".fits", ".fae.fits")
        diff = fits.FITSDiff(str(tmp_path / "one" / container), str(tmp_path / "two" / container),
                             ignore_keywords=["CHECKSUM", "DATASUM"])  # their comments carry the time written
        assert diff.identical, diff.report()
    code, _, err = _cli(["decompress", str(tmp_path / "one"), "--out", str(tmp_path / "one-decoded")], capsys)
    assert code == 0, err
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "decompress", str(tmp_path / "two"), "--out",
                      str(tmp_path / "two-decoded")], env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(line.split(" -> ")[0] for line in proc.stdout.splitlines() if " -> " in line) == \
        sorted(str(tmp_path / "two" / n.replace(".fits", ".fae.fits")) for n in names)
    for name in names:
        decoded = name.replace(".fits", ".decoded.fits")
        np.testing.assert_array_equal(fits.getdata(tmp_path / "one-decoded" / decoded),
                                      fits.getdata(tmp_path / "two-decoded" / decoded))


@pytest.mark.mpi
def test_a_file_one_rank_cannot_write_ends_the_two_rank_job(conv_run, tmp_path, mpirun):
    """The rank that meets the error ends the job: the other must not wait for its results for ever."""
    sources = write_fields(tmp_path / "in", 2, seed=4)
    (tmp_path / "out" / "field001.fae.fits").mkdir(parents=True)  # rank 1's container: a directory in the way
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "compress", "--run-dir", str(conv_run["run"]), "--eta", "2",
                      str(sources), "--out", str(tmp_path / "out")], env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert proc.returncode == 2 and "field001.fae.fits: cannot write the container" in proc.stderr, \
        proc.stdout + proc.stderr


def test_a_variance_decoder_unsure_everywhere_writes_no_sigma_beyond_the_tile_range(tmp_path, capsys):
    """σ pinned near ``logvar_max`` (e⁵ noise units under the asinh stretch) taken through the
    stretch claims errors far beyond any pixel of the tile; the SIGMA plane must never exceed
    max(HI − μ, μ − LO), the largest error the tile's recorded range allows, and reach it there."""
    train_dir = write_fields(tmp_path / "train", 4, seed=1)
    test_dir = write_fields(tmp_path / "test", 1, seed=2)
    run = train_run(tmp_path / "run", train_dir, {**CONV, "logvar_min": 9.0, "logvar_max": 10.0}, steps=2,
                    checkpoint_every=2, data={"normalization": "asinh"})
    source = next(test_dir.glob("*.fits"))
    _compress(run, source, tmp_path / "c.fae.fits", capsys, "--eta", "2", "--tile", "16")
    assert _cli(["decompress", str(tmp_path / "c.fae.fits"), "--out", str(tmp_path / "d.fits"), "--sigma"],
                capsys)[0] == 0
    with fits.open(tmp_path / "c.fae.fits") as container, fits.open(tmp_path / "d.fits") as decoded:
        rows = container["TILES", 1].data
        mu, sigma = decoded[0].data.astype(np.float64), decoded["SIGMA", 1].data.astype(np.float64)
    assert len(rows) == 4
    for row in rows:
        cut = (slice(row["Y0"], row["Y0"] + row["H"]), slice(row["X0"], row["X0"] + row["W"]))
        reach = np.maximum(row["HI"] - mu[cut], mu[cut] - row["LO"])
        assert np.all(sigma[cut] <= reach * (1 + 1e-6)), (row["Y0"], row["X0"], sigma[cut].max(), reach.max())
        assert np.allclose(sigma[cut], reach, rtol=1e-5)
