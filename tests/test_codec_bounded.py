"""``fitsae compress --quantize-level/--max-error/--lossless``: fpack's guarantees with the
autoencoder as the probability model — every pixel within Δ/2, zero-mean error, NaN/BLANK and
zeros exact, integers bit-exact, identical bytes in any process, and loud failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import ASTROPY_DATA, CONV_RATE, clean_env, shared_run
from fitsae.cli import main

M13 = ASTROPY_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits"
COMP = ASTROPY_DATA / "tests" / "data" / "comp.fits"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv_rate", CONV_RATE, steps=40, checkpoint_every=20)["run"]


@pytest.fixture(scope="module")
def galsim_field(tmp_path_factory):
    from fitsae.data.simulate import simulate

    (path,) = simulate("galsim", 1, 64, tmp_path_factory.mktemp("galsim"), seed=5)
    return path


def _float_with_holes(path: Path) -> Path:
    """Float32 sky with NaN pixels and exact zeros (a chip gap)."""
    rng = np.random.default_rng(3)
    img = 50 + 3 * rng.normal(size=(40, 48))
    img[5:9, 30] = np.nan
    img[:, 20:22] = 0.0
    fits.PrimaryHDU(img.astype(np.float32)).writeto(path)
    return path


def _scaled_int_with_blank(path: Path) -> Path:
    """int32 with BSCALE/BZERO and BLANK pixels, and WCS cards that must survive."""
    rng = np.random.default_rng(4)
    raw = np.rint(200 + 6 * rng.normal(size=(40, 40))).astype(np.int32)
    raw[10, 3:7] = -999
    hdu = fits.PrimaryHDU(raw)
    hdu.header.update({"BSCALE": 0.5, "BZERO": 1000.0, "BLANK": -999, "CTYPE1": "RA---TAN", "CRVAL1": 10.5})
    hdu.writeto(path)
    return path


def _cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _source(path: Path) -> tuple[np.ndarray, fits.Header, np.ndarray | None]:
    """First image HDU: physical float64 pixels (NaN at BLANK), header, stored integers (or None)."""
    # Unscaled: astropy drops BSCALE/BZERO from a header once it has scaled the data.
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.data is not None)
        header, stored = hdu.header.copy(), np.asarray(hdu.data)
    if header["BITPIX"] < 0:
        return stored.astype(np.float64), header, None
    phys = stored * header.get("BSCALE", 1.0) + header.get("BZERO", 0.0)
    if "BLANK" in header:
        phys = np.where(stored == header["BLANK"], np.nan, phys)
    return phys, header, stored


def _delta_map(container: Path, shape) -> np.ndarray:
    delta = np.full(shape, np.nan)
    with fits.open(container) as hdul:
        for row in hdul["TILES", 1].data:
            delta[row["Y0"]:row["Y0"] + row["H"], row["X0"]:row["X0"] + row["W"]] = row["DELTA"]
    return delta


def _round_trip(run, source, tmp_path, capsys, *mode):
    container, decoded = tmp_path / "c.fae.fits", tmp_path / "d.fits"
    code, out, err = _cli(["compress", "--run-dir", run, "--eta", 4, "--tile", 32, "--dither-seed", 11, *mode,
                           source, "--out", container], capsys)
    assert code == 0, err
    assert "largest error" in out
    code, _, err = _cli(["decompress", container, "--out", decoded], capsys)
    assert code == 0, err
    return container, decoded


@pytest.mark.parametrize("which", ["galsim", "m13", "comp", "holes", "blank"])
def test_every_pixel_within_half_a_step_unbiased_and_special_pixels_exact(which, run, galsim_field, tmp_path,
                                                                         capsys):
    source = {"galsim": galsim_field, "m13": M13, "comp": COMP, "holes": _float_with_holes(tmp_path / "h.fits"),
              "blank": _scaled_int_with_blank(tmp_path / "b.fits")}[which]
    container, decoded = _round_trip(run, source, tmp_path, capsys, "--quantize-level", 1)
    x, src_header, stored = _source(source)
    x_hat, out_header, out_stored = _source(decoded)
    assert out_header["BITPIX"] == src_header["BITPIX"]
    for key in ("BSCALE", "BZERO", "BLANK", "CTYPE1", "CRVAL1"):
        assert out_header.get(key) == src_header.get(key), key
    nan = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(x_hat), nan)
    if stored is not None and "BLANK" in src_header:
        np.testing.assert_array_equal(out_stored[nan], src_header["BLANK"])
    zeros = x == 0
    assert np.all(x_hat[zeros] == 0)
    delta = _delta_map(container, x.shape)
    error = (x_hat - x)[~nan]
    # A float output holds x̂ to half a float32 spacing; integer outputs are exact.
    slack = 0.5 * np.spacing(np.abs(x_hat[~nan]).astype(np.float32)) if stored is None else 0.0
    worst = np.abs(error) - (delta[~nan] / 2 + slack)
    assert worst.max() <= 0, f"{int((worst > 0).sum())} pixels beyond Δ/2"
    assert abs(error.mean()) <= 3 * error.std() / np.sqrt(error.size)
    if which == "galsim":  # dithered: the error fills the step, not only its centre
        assert np.abs(error / delta[~nan]).max() > 0.45


def test_int_to_float_quantizes_integers_at_the_requested_step_and_decodes_float32(run, tmp_path, capsys):
    """M13 (int16, σ of one to two counts) at q = 1: without --int-to-float the step would be one count, lossless."""
    container, decoded = _round_trip(run, M13, tmp_path, capsys, "--quantize-level", 1, "--int-to-float")
    x, _, _ = _source(M13)
    x_hat, out_header, out_stored = _source(decoded)
    assert out_header["BITPIX"] == -32 and out_stored is None
    assert not {"BSCALE", "BZERO", "BLANK"} & set(out_header)
    delta = _delta_map(container, x.shape)
    assert np.any(delta % 1 != 0)  # σ/q itself, not a whole odd number of counts
    error = x_hat - x
    worst = np.abs(error) - (delta / 2 + 0.5 * np.spacing(np.abs(x_hat).astype(np.float32)))
    assert worst.max() <= 0, f"{int((worst > 0).sum())} pixels beyond Δ/2"
    assert np.abs(error / delta).max() > 0.45  # dithered: the error fills the step
    assert abs(error.mean()) <= 3 * error.std() / np.sqrt(error.size)


def test_int_to_float_keeps_the_integers_where_the_step_is_finer_than_a_count(run, tmp_path, capsys):
    """At q = 16 a tile's step is a fraction of a count (except where its noise estimate is over
    16 counts): the dither would only add bits, so those tiles are coded in whole counts, exactly."""
    container, decoded = _round_trip(run, M13, tmp_path, capsys, "--quantize-level", 16, "--int-to-float")
    with fits.open(container) as hdul:
        rows = hdul["TILES", 1].data
        units, delta = np.asarray(rows["UNITS"]), np.asarray(rows["DELTA"])
        whole = np.zeros(fits.getdata(M13).shape, bool)
        for row in rows[units == 1]:
            whole[row["Y0"]:row["Y0"] + row["H"], row["X0"]:row["X0"] + row["W"]] = True
    assert np.all(delta[units == 0] > 1.0) and np.mean(units == 1) > 0.5, (units, delta)
    x, _, _ = _source(M13)
    x_hat, out_header, _ = _source(decoded)
    assert out_header["BITPIX"] == -32
    np.testing.assert_array_equal(x_hat[whole], x[whole])


def test_a_tile_the_model_cannot_predict_is_sent_without_latents(run, tmp_path, capsys):
    """Flat sky and noise: the latents would only add bytes, so every tile is η′ = 0 (its median
    and σ alone, the neighbours doing the rest) and still decodes within half a step."""
    source = tmp_path / "flat.fits"
    rng = np.random.default_rng(8)
    fits.PrimaryHDU((500 + 4 * rng.normal(size=(64, 64))).astype(np.float32)).writeto(source)
    container, decoded = _round_trip(run, source, tmp_path, capsys, "--quantize-level", 1)
    with fits.open(container) as hdul:
        assert set(hdul["TILES", 1].data["ETA"]) == {0}
    x, _, _ = _source(source)
    x_hat, _, _ = _source(decoded)
    slack = 0.5 * np.spacing(np.abs(x_hat).astype(np.float32))
    assert np.all(np.abs(x_hat - x) <= _delta_map(container, x.shape) / 2 + slack)


def test_int_to_float_without_a_step_is_a_one_line_error(run, galsim_field, tmp_path, capsys):
    for mode, says in ((["--int-to-float"], "need --quantize-level, --max-error or --lossless"),
                       (["--lossless", "--int-to-float"], "--int-to-float goes with --quantize-level or --max-error")):
        code, _, err = _cli(["compress", "--run-dir", run, "--eta", 4, *mode, galsim_field, "--out",
                             tmp_path / "x.fae.fits"], capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.fae.fits").exists()


def _one_pass_encode(k, base, families, special=None):
    """What compress wrote before the interlaced context: every pixel in one pass under the model."""
    from fitsae.codec import residual

    coded = np.asarray(k, np.int64).reshape(-1).copy()
    if special is not None:
        coded[special.reshape(-1)] = base.centre[special.reshape(-1)]
    data, escapes, family = min((*residual.encode(coded, base, fam), fam) for fam in families)
    return family, data, escapes, b"", coded


def test_a_container_written_before_the_context_decodes_the_same(run, tmp_path, capsys, monkeypatch):
    """Tiles coded in one pass, in a container without the RCTX column (as the previous version
    wrote them): decompress reads them within half a step, NaN and zeros exact."""
    from fitsae.codec import context

    source = _float_with_holes(tmp_path / "h.fits")
    with monkeypatch.context() as patch:
        patch.setattr(context, "encode", _one_pass_encode)
        code, _, err = _cli(["compress", "--run-dir", run, "--eta", 4, "--tile", 32, "--dither-seed", 11,
                             "--quantize-level", 1, source, "--out", tmp_path / "old.fae.fits"], capsys)
    assert code == 0, err
    with fits.open(tmp_path / "old.fae.fits") as hdul:
        hdus = []
        for hdu in hdul:
            if hdu.name == "TILES":
                assert all(len(v) == 0 for v in hdu.data["RCTX"])
                names = [c.name for c in hdu.columns if c.name != "RCTX"]
                hdu = fits.BinTableHDU.from_columns(
                    [fits.Column(n, hdu.columns[n].format, array=hdu.data[n]) for n in names], header=hdu.header)
            hdus.append(hdu)
        fits.HDUList(hdus).writeto(tmp_path / "older.fae.fits", checksum=True)
    code, _, err = _cli(["decompress", tmp_path / "older.fae.fits", "--out", tmp_path / "d.fits"], capsys)
    assert code == 0, err
    x, _, _ = _source(source)
    x_hat, _, _ = _source(tmp_path / "d.fits")
    nan = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(x_hat), nan)
    assert np.all(x_hat[x == 0] == 0)
    slack = 0.5 * np.spacing(np.abs(x_hat[~nan]).astype(np.float32))
    assert np.all(np.abs(x_hat - x)[~nan] <= _delta_map(tmp_path / "old.fae.fits", x.shape)[~nan] / 2 + slack)


def test_lossless_returns_the_identical_integers(run, tmp_path, capsys):
    for source in (M13, COMP):
        container, decoded = _round_trip(run, source, tmp_path, capsys, "--lossless")
        if source == M13:  # a crowded star field, unlike the training fields: the model's σ is too narrow
            with fits.open(container) as hdul:
                assert hdul["TILES", 1].data["RWIDEN"].max() > 0
        _, src_header, stored = _source(source)
        _, out_header, out_stored = _source(decoded)
        assert out_header["BITPIX"] == src_header["BITPIX"] == 16
        assert out_stored.dtype.newbyteorder("=") == stored.dtype.newbyteorder("=")  # comp.fits reads native
        np.testing.assert_array_equal(out_stored, stored)


def test_lossless_refuses_float_pixels_naming_the_file(run, tmp_path, capsys):
    source = _float_with_holes(tmp_path / "f.fits")
    code, _, err = _cli(["compress", "--run-dir", run, "--eta", 4, "--lossless", source, "--out",
                         tmp_path / "f.fae.fits"], capsys)
    assert code == 2 and str(source) in err and "HDU 0" in err and "BITPIX -32" in err
    assert not (tmp_path / "f.fae.fits").exists()


def _decode_in_fresh_process(container: Path, out: Path, threads: str) -> None:
    env = {**clean_env(), "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
           "OMP_NUM_THREADS": threads}
    env.pop("FITSAE_THREADS", None)
    proc = subprocess.run([sys.executable, "-m", "fitsae", "decompress", str(container), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_fresh_processes_with_other_thread_settings_decode_identical_bytes(run, galsim_field, tmp_path, capsys):
    container, decoded = _round_trip(run, galsim_field, tmp_path, capsys, "--quantize-level", 4)
    others = []
    for threads in ("1", "2"):
        other = tmp_path / f"threads{threads}.fits"
        _decode_in_fresh_process(container, other, threads)
        others.append(other)
    with fits.open(decoded) as here:
        for other in others:
            with fits.open(other) as there:
                assert here[0].data.tobytes() == there[0].data.tobytes()


def test_altered_coded_bytes_fail_naming_file_and_tile(run, galsim_field, tmp_path, capsys):
    container, _ = _round_trip(run, galsim_field, tmp_path, capsys, "--quantize-level", 2)
    # Altered and re-checksummed (FITS checksums would catch a plain flip first, see below).
    altered = tmp_path / "altered.fae.fits"
    with fits.open(container) as hdul:
        rows = hdul["TILES", 1].data
        y0, x0 = int(rows["Y0"][1]), int(rows["X0"][1])
        data = np.array(rows["RDATA"][1], np.uint8)
        data[len(data) // 2] ^= 0x10
        rows["RDATA"][1] = data
        hdul.writeto(altered, checksum=True)
    code, _, err = _cli(["decompress", altered, "--out", tmp_path / "x.fits"], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(altered) in err and f"tile at ({y0}, {x0})" in err, err
    assert not (tmp_path / "x.fits").exists()
    flipped = tmp_path / "flipped.fae.fits"
    with fits.open(container) as hdul:  # a byte of the first tile's row (the last bytes are FITS padding)
        start = hdul.fileinfo(hdul.index_of(("TILES", 1)))["datLoc"]
    raw = bytearray(container.read_bytes())
    raw[start + 2] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    code, _, err = _cli(["decompress", flipped, "--out", tmp_path / "y.fits"], capsys)
    assert code == 2 and "Traceback" not in err and str(flipped) in err


def test_max_error_bounds_every_pixel_by_e(run, galsim_field, tmp_path, capsys):
    container, decoded = _round_trip(run, galsim_field, tmp_path, capsys, "--max-error", 0.75)
    x, _, _ = _source(galsim_field)
    x_hat, _, _ = _source(decoded)
    with fits.open(container) as hdul:
        assert set(hdul["TILES", 1].data["DELTA"]) == {1.5} and hdul[0].header["FAEMODE"] == "max-error"
    slack = 0.5 * np.spacing(np.abs(x_hat).astype(np.float32))
    assert np.all(np.abs(x_hat - x) <= 0.75 + slack)


def test_best_density_is_each_tiles_smaller_one_and_decodes_the_same_pixels(run, galsim_field, tmp_path, capsys):
    # η′ fixed and 16² tiles: the two densities' bytes can be compared tile by tile.
    coded, pixels = {}, {}
    for family in ("laplace", "gaussian", "best"):
        container, decoded = _round_trip(run, galsim_field, tmp_path / family, capsys, "--quantize-level", 2,
                                         "--tile", 16, "--fixed-eta", "--residual-density", family)
        with fits.open(container) as hdul:
            rows = hdul["TILES", 1].data
            coded[family] = [len(v) for v in rows["RDATA"]]
            chosen = list(rows["RFAM"])
        pixels[family] = fits.getdata(decoded).tobytes()
    laplace, gaussian = np.array(coded["laplace"]), np.array(coded["gaussian"])
    assert (laplace < gaussian).any() and (gaussian < laplace).any()  # each density wins somewhere here
    np.testing.assert_array_equal(coded["best"], np.minimum(laplace, gaussian))
    assert all(g < lap if c == "gaussian" else lap <= g for c, lap, g in zip(chosen, laplace, gaussian))
    assert pixels["best"] == pixels["laplace"] == pixels["gaussian"]


def test_widening_moves_every_width_up_the_table_by_whole_entries():
    from fitsae.codec.residual import WIDTHS, predict

    prediction = predict(np.array([0.3, 5.0, 7.2]), np.array([0.1, 1.0, 12000.0]))
    wider = prediction.widened(3)
    np.testing.assert_array_equal(wider.centre, prediction.centre)
    np.testing.assert_array_equal(wider.offset, prediction.offset)
    np.testing.assert_allclose(wider.width[:2], 2 * prediction.width[:2], rtol=1e-15)  # three entries: ×2
    assert prediction.width[2] == wider.width[2] == WIDTHS[-1]  # the table's end holds


@pytest.mark.parametrize("which", ["galsim", "blank", "m13"])
def test_the_sigma_plane_is_the_rms_error_of_the_decoded_pixels(which, run, galsim_field, tmp_path, capsys):
    source = {"galsim": galsim_field, "blank": _scaled_int_with_blank(tmp_path / "b.fits"), "m13": M13}[which]
    container, decoded = tmp_path / "c.fae.fits", tmp_path / "d.fits"
    mode = ("--lossless",) if which == "m13" else ("--quantize-level", 1)
    assert _cli(["compress", "--run-dir", run, "--eta", 4, "--tile", 32, "--dither-seed", 11, *mode, source,
                 "--out", container], capsys)[0] == 0
    assert _cli(["decompress", container, "--out", decoded, "--sigma"], capsys)[0] == 0
    x, _, _ = _source(source)
    x_hat, _, _ = _source(decoded)
    sigma = fits.getdata(decoded, "SIGMA").astype(np.float64)
    np.testing.assert_array_equal(np.isnan(sigma), np.isnan(x))
    good = ~np.isnan(x)
    if which == "m13":
        assert np.all(sigma[good] == 0)
        return
    measured, claimed = np.sqrt(np.mean((x_hat - x)[good] ** 2)), np.sqrt(np.mean(sigma[good] ** 2))
    assert 0.9 < measured / claimed < 1.1, (measured, claimed)
