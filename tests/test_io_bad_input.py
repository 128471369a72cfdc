"""Every kind of bad input gives a clear rejection naming file, HDU and reason; index goes on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from fitsae.cli import index as index_cli
from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths
from data_helpers import gaussian_field, write_raw_fits


def _good(path):
    return write_raw_fits(path, gaussian_field(np.random.default_rng(0), (16, 16)), -32)


def _bad_files(d):
    """name → (path, expected HDU, expected words in the reason)."""
    good = _good(d / "good.fits").read_bytes()
    cases = {}
    (d / "empty.fits").write_bytes(b"")
    cases["empty"] = (d / "empty.fits", None, "empty file")
    (d / "truncated.fits").write_bytes(good[: 2880 + 100])
    cases["truncated"] = (d / "truncated.fits", 0, "truncated")
    (d / "text.fits").write_text("just some text, not FITS\n" * 200)
    cases["not fits"] = (d / "text.fits", None, "not a FITS file")
    (d / "noend.fits").write_bytes(good[:2880].replace(b"END" + b" " * 77, b" " * 80) + good[2880:])
    cases["no END"] = (d / "noend.fits", None, "END")
    write_raw_fits(d / "naxis1.fits", np.zeros(16, np.int16), 16)
    cases["NAXIS=1"] = (d / "naxis1.fits", 0, "NAXIS=1")
    write_raw_fits(d / "naxis4.fits", np.zeros((2, 3, 16, 16), np.int16), 16)
    cases["NAXIS=4"] = (d / "naxis4.fits", 0, "NAXIS=4")
    header = fits.Header([("SIMPLE", True), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", 16), ("NAXIS2", 0)])
    (d / "zero.fits").write_bytes(header.tostring().encode())
    cases["zero-length axis"] = (d / "zero.fits", 0, "zero-length axis (NAXIS2=0)")
    header = fits.Header([("SIMPLE", True), ("BITPIX", 24), ("NAXIS", 2), ("NAXIS1", 16), ("NAXIS2", 16)])
    (d / "bitpix.fits").write_bytes(header.tostring().encode() + b"\0" * 2880)
    cases["BITPIX"] = (d / "bitpix.fits", 0, "unsupported BITPIX=24")
    fits.PrimaryHDU(np.full((16, 16), np.nan, np.float32)).writeto(d / "allnan.fits")
    cases["all NaN"] = (d / "allnan.fits", 0, "all 256 pixels are NaN")
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(d / "small.fits")
    cases["smaller than tile"] = (d / "small.fits", 0, "smaller than the 16x16 tile")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("A", "J", array=[1])])]
                 ).writeto(d / "table.fits")
    cases["no image"] = (d / "table.fits", None, "no image HDU")
    return cases


@pytest.fixture
def bad_dir(tmp_path):
    cases = _bad_files(tmp_path)
    return tmp_path, cases


def test_each_bad_input_is_rejected_with_file_hdu_and_reason(bad_dir):
    d, cases = bad_dir
    manifest, rejected = index_paths([str(d)], DataConfig(tile=16))
    assert [r.path for r in manifest] == [str(d / "good.fits")]  # index went on past every bad file
    by_path = {r["path"]: r for r in rejected}
    for name, (path, hdu, words) in cases.items():
        record = by_path.get(str(path))
        assert record is not None, f"{name}: not rejected"
        assert record["hdu"] == hdu, (name, record)
        assert words in record["reason"], (name, record)
    assert len(rejected) == len(cases)


def test_missing_path_and_empty_glob_are_rejected(tmp_path):
    _good(tmp_path / "a.fits")
    manifest, rejected = index_paths([str(tmp_path / "a.fits"), str(tmp_path / "nope.fits"),
                                      str(tmp_path / "*.fz")], DataConfig(tile=16))
    assert len(manifest) == 1
    assert [(r["path"].rsplit("/", 1)[-1], r["reason"]) for r in rejected] == [
        ("nope.fits", "no such file or directory"), ("*.fz", "glob matches no files")]


def test_blank_nan_inf_are_counted_not_rejected(tmp_path):
    raw = np.arange(256, dtype=np.int16).reshape(16, 16)
    raw[2, 3] = raw[5, 5] = -999
    write_raw_fits(tmp_path / "blank.fits", raw, 16, BLANK=-999)
    data = gaussian_field(np.random.default_rng(1), (16, 16))
    data[0, 0], data[1, 1], data[2, 2] = np.nan, np.inf, -np.inf
    fits.PrimaryHDU(data).writeto(tmp_path / "nan.fits")
    manifest, rejected = index_paths([str(tmp_path)], DataConfig(tile=16))
    assert not rejected
    assert {r.path.rsplit("/", 1)[-1]: r.n_masked for r in manifest} == {"blank.fits": 2, "nan.fits": 3}


def test_small_image_is_kept_with_edge_pad(tmp_path):
    fits.PrimaryHDU(np.ones((8, 12), np.float32)).writeto(tmp_path / "small.fits")
    manifest, rejected = index_paths([str(tmp_path)], DataConfig(tile=16, edge="pad"))
    assert not rejected and manifest[0].tiles == (1, 1)


def test_index_cli_reports_and_writes_rejections(bad_dir, capsys):
    d, cases = bad_dir
    out = d / "out" / "train.jsonl"
    assert index_cli.main([str(d), "--out", str(out), "--tile", "16"]) == 0
    printed = capsys.readouterr().out
    assert "1 image planes in 1 files" in printed
    rejected = [json.loads(line) for line in (d / "out" / "train.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == len(cases)
    for r in rejected:
        assert r["path"] in printed and r["reason"] in printed
    assert index_cli.main([str(d), "--out", str(out), "--tile", "16", "--strict"]) == 2
    assert index_cli.main([str(cases["empty"][0]), "--out", str(d / "none.jsonl")]) == 2
