"""``fitsae evaluate`` end to end on a tiny run trained by the real ``fitsae train``."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval_helpers import ASTROPY_DATA, CONV, DENSE, clean_env, shared_run
from fitsae.evaluate.report import CSV_NAME, REPORT_NAME, missing_keys

FIGURES = ("error_vs_ratio.png", "error_vs_bpp.png", "calibration.png", "examples.png", "pca_spectrum.png")


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """A conv run (stride 4, C = 4) trained 20 steps on 32×32 fields, checkpoints at 10 and 20."""
    return shared_run(tmp_path_factory, "conv", CONV)


def evaluate(args: list[str], capsys) -> tuple[int, str, str]:
    """``fitsae evaluate ARGS`` in this process (TensorFlow loads once for the whole module)."""
    from fitsae.cli import main

    code = main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def full_eval(conv_run, tmp_path_factory):
    """The default evaluation of ``conv_run`` (every η, fpack, plots, TensorBoard), run once."""
    from fitsae.cli import main

    out = tmp_path_factory.mktemp("fulleval") / "eval"
    args = ["--run-dir", str(conv_run["run"]), "--data", str(conv_run["test"]), "--fpack-tiles", "8"]
    code = main(["evaluate", *args, "--out", str(out)])
    return {"code": code, "out": out, "args": args}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_report_has_every_schema_key_and_sane_numbers(conv_run, full_eval):
    assert full_eval["code"] == 0
    out = full_eval["out"]
    report = json.loads((out / REPORT_NAME).read_text())
    assert missing_keys(report) == []

    assert report["model"]["checkpoint_step"] == 20 and report["model"]["kind"] == "conv"
    assert report["data"]["n_tiles"] == 3 * 4  # three 32×32 images in 16×16 tiles
    assert [r["eta"] for r in report["results"]] == [1, 2, 3, 4]
    for row in report["results"]:
        # stride 4 on 16×16 tiles: 4×4 latent positions, η values each
        assert row["latent_values"] == 16 * row["eta"]
        # the rate is the coded bytes of the budget's kept channels, not a count of latent values
        assert row["bits_per_pixel"] == row["ae"]["bits_per_pixel_coded"] > 0
        assert row["compression_ratio"] == pytest.approx(32 / row["bits_per_pixel"])
        for key in ("mse", "rmse_over_noise", "psnr", "nll", "sigma_z_std", "coverage_1sigma", "coverage_2sigma"):
            assert _finite(row["ae"][key]), key
        for key in ("mse", "rmse_over_noise", "psnr"):
            assert _finite(row["pca"][key]), key
    assert len(report["pca"]["eigenvalues"]) == 16 and report["pca"]["n_vectors"] == 12 * 4 * 16
    # The budget (not the model) guarantees these: each tile keeps its best η′ ≤ η, so the error
    # cannot rise with η nor exceed the plain mask's; whether the numbers are the model's is
    # test_rows_are_the_model_and_pca_recomputed_from_scratch.
    assert report["ae_error_nonincreasing_in_eta"] is True and report["ae_error_increases"] == []
    for row in report["results"]:
        ae = row["ae"]
        assert 0 <= ae["mean_eta_kept"] <= row["eta"] and sum(ae["tiles_by_eta_kept"].values()) == 12
        assert all(0 <= int(k) <= row["eta"] for k in ae["tiles_by_eta_kept"])
        # a tile's first η′ ≥ 1 channels are a part of its η channels: never more bits by the
        # tables; a background-only tile (η′ = 0) costs its median's 32 bits
        background_bits = 32 * ae["tiles_by_eta_kept"].get("0", 0) / (12 * 16 * 16)
        assert ae["bits_per_pixel_estimated"] <= (row["ae_fixed_mask"]["bits_per_pixel_estimated"] * (1 + 1e-12)
                                                  + background_bits)
    assert isinstance(report["ae_fixed_mask_nonincreasing_in_eta"], bool)
    assert report["ae_error_increase_significant"] is False

    fpack, jpegxl = report["baselines"]["fpack"], report["baselines"]["jpegxl"]
    # Float input: no lossless settings; RICE_1 at 6 levels, HCOMPRESS_1 at 6 scales, JPEG-XL at RICE's levels.
    assert {e["compression_type"] for e in fpack} == {"RICE_1", "HCOMPRESS_1"} and len(fpack) == 12
    assert [e["label"] for e in jpegxl] == [f"JPEG-XL q={q:g}" for q in (0.5, 1, 2, 4, 8, 16)]
    rice = [e for e in fpack if e["compression_type"] == "RICE_1"]
    assert [e["bits_per_pixel"] for e in rice] == sorted(e["bits_per_pixel"] for e in rice)
    assert all(e["n_tiles"] == 8 and 0 < e["rmse_over_noise"] < 1 for e in rice)
    assert all(e["bits_per_pixel_with_headers"] > e["bits_per_pixel"] for e in fpack + jpegxl)
    assert all(e["compression_ratio"] == pytest.approx(32 / e["bits_per_pixel"]) for e in fpack + jpegxl)
    # No TRUTH planes in these fields: the truth figures are null, the others are there.
    assert report["data"]["input_bitpix"] == [-32] and report["data"]["planes_with_truth"] == 0
    for entry in [r[m] for r in report["results"] for m in ("ae", "ae_fixed_mask", "pca")] + fpack + jpegxl:
        assert entry["rmse_over_noise_truth"] is None and entry["n_pixels_truth"] == 0
        assert _finite(entry["max_abs_error_over_noise"]) and _finite(entry["mean_error_over_noise"])
        assert 0 <= entry["median_abs_error_over_noise"] <= entry["p99_abs_error_over_noise"] \
            <= entry["max_abs_error_over_noise"]

    assert report["data"]["psnr_peak"] > 0 and "max − min" in report["data"]["psnr_peak_definition"]
    example = report["examples"]["tiles"][0]
    assert [e["eta"] for e in example["etas"]] == [1, 3, 4]
    assert np.asarray(example["input"]).shape == (16, 16)

    lines = (out / CSV_NAME).read_text().splitlines()
    assert len(lines) == 1 + 3 * 4 + 12 + 6  # AE, AE with the plain mask and PCA at each η; fpack; JPEG-XL
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name

    # Eval scalars went to the run's TensorBoard, at the checkpoint's step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(conv_run["run"] / "tb" / "eval"))
    acc.Reload()
    tags = acc.Tags()["tensors"] + acc.Tags()["scalars"]
    assert "eval/ae_rmse_over_noise/eta_004" in tags and "eval/pca_psnr/eta_001" in tags
    assert "eval/ae_fixed_mask_rmse_over_noise/eta_004" in tags and "eval/ae_mean_eta_kept/eta_004" in tags
    events = acc.Tensors("eval/ae_rmse_over_noise/eta_004")
    assert events[-1].step == 20
    value = float(np.asarray(__import__("tensorflow").make_ndarray(events[-1].tensor_proto)))
    assert value == pytest.approx(report["results"][3]["ae"]["rmse_over_noise"], rel=1e-6)


def _from_scratch(run_dir: Path, test_dir: Path) -> dict:
    """Each η's AE (budget and plain mask) and PCA numbers, recomputed without the runner.

    The model at every η′ with its latents quantized on the frozen tables' grid and μ kept in
    each tile's range (what the codec stores and decodes), the budget's choice (per tile, the
    first η′ ≤ η of smallest error), the calibration of the chosen (μ, σ), and PCA with exactly η
    components per 4×4 patch fitted on the run's training tiles, coefficients rounded to its
    step of 1: numpy on the pipeline's batches.
    """
    import tensorflow as tf

    from fitsae.codec.artifact import tables_for

    from fitsae.data.manifest import Manifest, index_paths
    from fitsae.data.normalize import denormalize
    from fitsae.data.pipeline import Pipeline
    from fitsae.evaluate.pca import from_patches, to_patches
    from fitsae.train.checkpoints import load_model

    cfg, model, step = load_model(run_dir)
    grid = tables_for(run_dir, cfg, model, step).step

    def batches(manifest):
        return list(Pipeline(manifest, cfg.data).evaluation(64).as_numpy_iterator())

    train_x = np.concatenate([b["x"] for b in batches(Manifest.load(run_dir / "manifest.jsonl"))])
    patches = to_patches(train_x.astype(np.float64), (4, 4))
    mean = patches.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(patches, rowvar=False, bias=True))
    vectors = vectors[:, np.argsort(values)[::-1]]
    test, _ = index_paths([str(test_dir)], cfg.data)
    (batch,) = batches(test)
    x = batch["x"]

    def physical(a):
        return np.asarray(denormalize(np.asarray(a, np.float32), batch["offset"], batch["scale"], cfg.data), np.float64)

    x_phys = physical(x)
    lo, hi = x_phys.min(axis=(1, 2, 3), keepdims=True), x_phys.max(axis=(1, 2, 3), keepdims=True)
    noise_phys = (batch["noise"].astype(np.float64) * batch["scale"])[:, None, None, None]
    # η′ = 0: the tile's lower median alone (stored as float32), σ from the decoder at zero latents.
    flat_x, flat_phys = x.reshape(len(x), -1), x_phys.reshape(len(x), -1)
    order = (flat_x.shape[1] - 1) // 2
    bg_norm = np.partition(flat_x, order, axis=1)[:, order].astype(np.float64)
    bg_phys = np.float32(np.partition(flat_phys, order, axis=1)[:, order]).astype(np.float64)
    zeros = np.zeros(np.asarray(model.encode(tf.constant(x), tf.fill([len(x)], 1))).shape, np.float32)
    outputs = [(bg_norm[:, None, None, None] * np.ones(x.shape), model.decode_var(tf.constant(zeros)).numpy().astype(np.float64),
                np.clip(bg_phys[:, None, None, None] * np.ones(x.shape), lo, hi))]
    for eta in range(1, 5):
        z = np.asarray(model.encode(tf.constant(x), tf.fill([len(x)], eta)), np.float64)
        z = (np.rint(z / grid) * grid).astype(np.float32)  # zero beyond η stays zero
        mu, log_var = model.decode_mean(tf.constant(z)).numpy(), model.decode_var(tf.constant(z)).numpy()
        outputs.append((mu.astype(np.float64), log_var.astype(np.float64), np.clip(physical(mu), lo, hi)))
    tile_error = np.stack([(((x_phys - m) / noise_phys) ** 2).mean(axis=(1, 2, 3)) for _, _, m in outputs])
    rows = {}
    for eta in range(1, 5):
        kept = np.argmin(tile_error[:eta + 1], axis=0)  # first of the smallest: η′ = kept (0: the median)
        mu = np.stack([outputs[k][0][i] for i, k in enumerate(kept)])
        log_var = np.stack([outputs[k][1][i] for i, k in enumerate(kept)])
        mu_phys = np.stack([outputs[k][2][i] for i, k in enumerate(kept)])
        z = (x.astype(np.float64) - mu) * np.exp(-0.5 * log_var)
        v = vectors[:, :eta]
        coefficients = np.rint((to_patches(x.astype(np.float64), (4, 4)) - mean) @ v)
        pca_norm = from_patches(coefficients @ v.T + mean, (16, 16), (4, 4))
        rows[eta] = {
            "ae": {"mse": np.mean((x_phys - mu_phys) ** 2),
                   "rmse_over_noise": np.sqrt(np.mean(((x_phys - mu_phys) / noise_phys) ** 2)),
                   "sigma_z_std": np.std(z), "coverage_1sigma": np.mean(np.abs(z) < 1),
                   "coverage_2sigma": np.mean(np.abs(z) < 2), "mean_eta_kept": np.mean(kept)},
            "ae_fixed_mask": {"mse": np.mean((x_phys - outputs[eta][2]) ** 2)},
            "pca": {"mse": np.mean((x_phys - physical(pca_norm[..., None])) ** 2)},
        }
    return rows


def test_rows_are_the_model_and_pca_recomputed_from_scratch(conv_run, full_eval):
    """The report's AE, plain-mask and PCA numbers are those of the model and of k = η PCA."""
    report = json.loads((full_eval["out"] / REPORT_NAME).read_text())
    expected = _from_scratch(conv_run["run"], conv_run["test"])
    for row in report["results"]:
        for method, values in expected[row["eta"]].items():
            for key, value in values.items():
                assert row[method][key] == pytest.approx(value, rel=1e-5), (row["eta"], method, key)


def test_examples_are_the_first_and_the_worst_tile(full_eval):
    report = json.loads((full_eval["out"] / REPORT_NAME).read_text())
    top = report["results"][-1]["eta"]

    def rmse_over_noise(tile) -> float:  # at the largest η, from the stored residual
        entry = next(e for e in tile["etas"] if e["eta"] == top)
        return math.sqrt(np.mean(np.square(entry["residual"]))) / tile["noise"]

    first, worst = report["examples"]["tiles"]
    assert first["shown_as"] == "first tile" and worst["tile_id"] != first["tile_id"]
    assert worst["shown_as"] == f"worst tile: RMSE/σ_noise {rmse_over_noise(worst):.3g} at η={top}"
    assert rmse_over_noise(worst) > rmse_over_noise(first)


def test_checkpoint_all_scores_each_step(conv_run, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, stderr = evaluate(["--run-dir", str(conv_run["run"]), "--data", str(conv_run["test"]), "--out", str(out),
                     "--checkpoint", "all", "--etas", "1,4", "--fpack-tiles", "0", "--no-plots",
                     "--no-tensorboard"], capsys)
    assert code == 0, stderr
    steps = {p.name: json.loads((p / REPORT_NAME).read_text()) for p in (out / "steps").iterdir()}
    assert set(steps) == {"step-10", "step-20"}
    assert steps["step-10"]["model"]["checkpoint_step"] == 10
    latest = json.loads((out / REPORT_NAME).read_text())
    assert latest["model"]["checkpoint_step"] == 20 and [r["eta"] for r in latest["results"]] == [1, 4]
    assert latest["baselines"]["fpack"] == []
    assert "AE vs PCA" in stdout and stdout.count("winner") == 1  # the table of the newest checkpoint
    # The PCA baseline does not depend on the checkpoint.
    assert steps["step-10"]["results"][0]["pca"] == latest["results"][0]["pca"]


def test_missing_checkpoint_is_a_clear_error(conv_run, tmp_path, capsys):
    code, stdout, stderr = evaluate(["--run-dir", str(conv_run["run"]), "--data", str(conv_run["test"]),
                     "--out", str(tmp_path / "e"), "--checkpoint", "15"], capsys)
    assert code == 2
    assert "no checkpoint at step 15" in stderr and "10, 20" in stderr
    assert "Traceback" not in stderr

    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(conv_run["run"] / "params.yaml", empty / "params.yaml")
    code, stdout, stderr = evaluate(["--run-dir", str(empty), "--data", str(conv_run["test"]), "--out", str(tmp_path / "e2")], capsys)
    assert code == 2 and "no checkpoints" in stderr and "Traceback" not in stderr

    code, stdout, stderr = evaluate(["--run-dir", str(tmp_path / "nowhere"), "--data", str(conv_run["test"])], capsys)
    assert code == 2 and "does not exist" in stderr


def test_bad_etas_are_clear_errors(conv_run, tmp_path, capsys):
    base = ["--run-dir", str(conv_run["run"]), "--data", str(conv_run["test"]), "--out", str(tmp_path / "e")]
    code, _, stderr = evaluate(base + ["--etas", "1,x"], capsys)
    assert code == 2 and "'x' is not an integer" in stderr
    code, _, stderr = evaluate(base + ["--etas", "2-6"], capsys)
    assert code == 2 and "[5, 6] outside 1..4" in stderr


def test_corrupted_checkpoint_is_a_clear_error(conv_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(conv_run["run"], run)
    data = next((run / "checkpoints").glob("ckpt-20.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    code, stdout, stderr = evaluate(["--run-dir", str(run), "--data", str(conv_run["test"]), "--out", str(tmp_path / "e")], capsys)
    assert code == 2, stderr
    assert "ckpt-20" in stderr and "cannot restore" in stderr
    assert "Traceback" not in stderr


def test_watch_follows_a_training_run_and_stops_at_its_final_step(conv_run, tmp_path, capsys):
    """Training runs in another process while the watcher scores each checkpoint as it appears."""
    run = tmp_path / "run"
    training = subprocess.Popen(
        [sys.executable, "-m", "fitsae", "train", "--config", str(conv_run["run"] / "params.yaml"),
         "--run-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )
    try:
        out = tmp_path / "eval"
        # train.steps is 20 with checkpoints at 10 and 20: the watch must end by itself after 20.
        code, stdout, stderr = evaluate(["--run-dir", str(run), "--data", str(conv_run["test"]), "--out", str(out),
                                         "--watch", "--poll", "0.5", "--watch-timeout", "300", "--etas", "2",
                                         "--fpack-tiles", "0", "--no-plots"], capsys)
        log = training.communicate(timeout=600)[0]
    finally:
        training.kill()
    assert training.returncode == 0, log
    assert code == 0, stderr
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["step-10", "step-20"]
    assert json.loads((out / REPORT_NAME).read_text())["model"]["checkpoint_step"] == 20
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb" / "eval"))
    acc.Reload()
    assert [e.step for e in acc.Tensors("eval/ae_rmse_over_noise/eta_002")] == [10, 20]


def test_watch_gives_up_when_no_checkpoint_appears(conv_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(conv_run["run"] / "params.yaml", run / "params.yaml")
    code, stdout, stderr = evaluate(["--run-dir", str(run), "--data", str(conv_run["test"]), "--out", str(tmp_path / "e"),
                     "--watch", "--poll", "0.1", "--watch-timeout", "0.5"], capsys)
    assert code == 2 and "no checkpoint appeared" in stderr
    # A watcher may start before training created the run directory; it waits for it the same way.
    code, stdout, stderr = evaluate(["--run-dir", str(tmp_path / "not_yet"), "--data", str(conv_run["test"]),
                                     "--out", str(tmp_path / "e2"), "--watch", "--poll", "0.1",
                                     "--watch-timeout", "0.3"], capsys)
    assert code == 2 and "no checkpoint appeared" in stderr


def test_real_sky_images_shipped_with_astropy(conv_run, tmp_path, capsys):
    """m13 (300×300 int16) as RICE_1 and HCOMPRESS_1 tile-compressed files, through index + pipeline."""
    data = ASTROPY_DATA / "hdu" / "compressed" / "tests" / "data"
    files = [str(data / name) for name in ("m13_rice.fits", "m13_hcomp.fits")]
    out = tmp_path / "eval"
    code, stdout, stderr = evaluate(["--run-dir", str(conv_run["run"]), "--data", *files, "--out", str(out),
                                     "--etas", "1,4", "--fpack-tiles", "4", "--no-tensorboard", "--no-plots"],
                                    capsys)
    assert code == 0, stderr
    report = json.loads((out / REPORT_NAME).read_text())
    assert missing_keys(report) == []
    # 300 = 18 tiles of 16 + a last tile shifted back to the edge: 19 × 19 per image
    assert report["data"]["n_tiles"] == 2 * 19 * 19
    assert all(_finite(r["ae"]["rmse_over_noise"]) and _finite(r["pca"]["rmse_over_noise"])
               for r in report["results"])
    manifest = [json.loads(line) for line in (out / "test.manifest.jsonl").read_text().splitlines()]
    assert [Path(m["path"]).name for m in manifest] == ["m13_rice.fits", "m13_hcomp.fits"]
    assert all(m["compressed"] for m in manifest)
    # int16 input: every ratio counts 16 input bits per pixel, and the lossless codecs are exact.
    assert report["data"]["input_bitpix"] == [16] and report["data"]["input_bits_per_pixel"] == 16
    assert all(r["compression_ratio"] == pytest.approx(16 / r["bits_per_pixel"]) for r in report["results"])
    lossless = {e["label"]: e for family in ("fpack", "jpegxl") for e in report["baselines"][family] if e["lossless"]}
    assert set(lossless) == {"RICE_1 lossless", "JPEG-XL lossless"}
    for entry in lossless.values():
        assert entry["n_tiles"] == 4 and entry["max_abs_error"] == 0.0 and entry["rmse_over_noise"] == 0.0
        assert entry["compression_ratio"] == pytest.approx(16 / entry["bits_per_pixel"])


def test_simulated_truth_is_scored_for_every_method(conv_run, tmp_path, capsys):
    """On fields that carry their noiseless truth, every method is scored against it too."""
    from fitsae.data.simulate import simulate

    simulate("toy", 2, 32, tmp_path / "sim", seed=5)
    out = tmp_path / "eval"
    code, stdout, stderr = evaluate(["--run-dir", str(conv_run["run"]), "--data", str(tmp_path / "sim"),
                                     "--out", str(out), "--etas", "1,4", "--fpack-tiles", "4", "--no-tensorboard",
                                     "--no-plots"], capsys)
    assert code == 0, stderr
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["data"]["planes_with_truth"] == 2 and report["data"]["n_tiles"] == 8
    for row in report["results"]:
        for method in ("ae", "ae_fixed_mask", "pca"):
            entry = row[method]
            assert entry["n_pixels_truth"] == entry["n_pixels"] == 8 * 256
            assert _finite(entry["rmse_over_noise_truth"]) and entry["rmse_over_noise_truth"] != entry["rmse_over_noise"]
    rice = {e["quantize_level"]: e for e in report["baselines"]["fpack"] if e["compression_type"] == "RICE_1"}
    # Near-lossless RICE keeps the noise: against the input its error is tiny, against the truth it
    # is the noise itself (σ = 1 in these fields), which only an aligned truth can give.
    assert rice[16]["rmse_over_noise"] < 0.05 and rice[16]["rmse_over_noise_truth"] == pytest.approx(1.0, abs=0.1)
    for entry in report["baselines"]["jpegxl"]:  # the same integers, so the very same errors
        same = rice[entry["quantize_level"]]
        for key in ("rmse_over_noise", "rmse_over_noise_truth", "max_abs_error", "mean_error"):
            assert entry[key] == same[key], key
    assert "model truth" in stdout and "truth" in stdout.split("fpack (astropy")[1]


def test_a_truth_equal_to_the_image_gives_every_method_its_input_figures(conv_run, tmp_path, capsys):
    """TRUTH planes that are the image itself: the truth figures must be the input figures, pixel for pixel."""
    from astropy.io import fits

    data = tmp_path / "same"
    data.mkdir()
    for path in sorted(conv_run["test"].iterdir())[:2]:
        image = fits.getdata(path)
        fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(image, name="TRUTH")]).writeto(data / path.name)
    out = tmp_path / "eval"
    code, _, stderr = evaluate(["--run-dir", str(conv_run["run"]), "--data", str(data), "--out", str(out),
                                "--etas", "1,4", "--fpack-tiles", "2", "--no-tensorboard", "--no-plots"], capsys)
    assert code == 0, stderr
    report = json.loads((out / REPORT_NAME).read_text())
    entries = [r[m] for r in report["results"] for m in ("ae", "ae_fixed_mask", "pca")]
    entries += report["baselines"]["fpack"] + report["baselines"]["jpegxl"]
    for entry in entries:
        assert entry["n_pixels_truth"] == entry["n_pixels"]
        for key in ("rmse_over_noise", "mean_error_over_noise", "max_abs_error_over_noise"):
            # x̂ − x and x̂ − truth differ only by the float32 round trip of the normalization.
            assert entry[key + "_truth"] == pytest.approx(entry[key], rel=1e-4, abs=1e-5), key


def test_dense_model_scores_every_eta_against_image_pca(tmp_path_factory, tmp_path, capsys):
    dense = shared_run(tmp_path_factory, "dense", DENSE, tile=8, steps=10, checkpoint_every=10)
    out = tmp_path / "eval"
    code, stdout, stderr = evaluate(["--run-dir", str(dense["run"]), "--data", str(dense["test"]), "--out", str(out),
                                     "--fpack-tiles", "0", "--no-plots", "--no-tensorboard"], capsys)
    assert code == 0, stderr
    report = json.loads((out / REPORT_NAME).read_text())
    assert missing_keys(report) == []
    assert [r["eta"] for r in report["results"]] == [1, 2, 3, 4, 5, 6]  # every η of a small dense latent
    assert all(r["latent_values"] == r["eta"] and r["compression_ratio"] == pytest.approx(32 / r["bits_per_pixel"])
               for r in report["results"])
    assert report["pca"]["dim"] == 64 and report["pca"]["components_per"] == "image"
    assert report["data"]["n_tiles"] == 3 * 16
    pca = [r["pca"]["mse"] for r in report["results"]]
    assert pca == sorted(pca, reverse=True)


def test_bands_count_brightness_above_the_sky_for_an_unnormalized_model(tmp_path, capsys):
    """Under ``normalization: none`` (offset 0) the bands still measure each pixel from the sky:
    fields of a 100-count sky with σ = 2 put nearly every pixel in the faint band, not at 50σ."""
    from eval_helpers import train_run, write_fields

    train_dir = write_fields(tmp_path / "train", 4, seed=1)
    run = train_run(tmp_path / "run", train_dir, CONV, steps=2, checkpoint_every=2, data={"normalization": "none"})
    out = tmp_path / "eval"
    code, _, stderr = evaluate(["--run-dir", str(run), "--data", str(write_fields(tmp_path / "test", 2, seed=2)),
                                "--out", str(out), "--etas", "1", "--fpack-tiles", "0", "--no-plots",
                                "--no-tensorboard"], capsys)
    assert code == 0, stderr
    bands = json.loads((out / REPORT_NAME).read_text())["results"][0]["ae"]["bands"]
    faint = next(b for b in bands if b["snr_low"] == -5.0)
    assert faint["pixel_fraction"] > 0.5


def test_a_wide_dense_model_tries_the_budget_ladder(tmp_path_factory, tmp_path, capsys):
    """Beyond 64 channels the budget tries a log-spaced ladder (fitsae.budget): the default η are
    ladder values, whose error cannot rise; a requested η off the ladder is tried by itself."""
    from fitsae.budget import candidates, ladder
    from fitsae.evaluate.options import default_etas

    channels = 70
    wide = shared_run(tmp_path_factory, "wide", {**DENSE, "latent_channels": channels}, tile=8, steps=10,
                      checkpoint_every=10)
    steps = ladder(channels)
    off = next(k for k in range(2, channels) if k not in steps)
    etas = sorted(default_etas(True, channels) + [off])
    assert set(etas) - {off} <= set(steps) and len(steps) < channels
    out = tmp_path / "eval"
    code, _, stderr = evaluate(["--run-dir", str(wide["run"]), "--data", str(wide["test"]), "--out", str(out),
                                "--etas", ",".join(map(str, etas)), "--fpack-tiles", "0", "--no-plots",
                                "--no-tensorboard"], capsys)
    assert code == 0, stderr
    report = json.loads((out / REPORT_NAME).read_text())
    assert [r["eta"] for r in report["results"]] == etas
    previous = math.inf
    for row in report["results"]:
        kept = {int(k) for k in row["ae"]["tiles_by_eta_kept"]}
        assert kept <= {0, *candidates(row["eta"], channels)}, row["eta"]
        assert row["ae"]["mse"] <= row["ae_fixed_mask"]["mse"] * (1 + 1e-12)
        if row["eta"] != off:
            assert row["ae"]["rmse_over_noise"] <= previous * (1 + 1e-12), row["eta"]
            previous = row["ae"]["rmse_over_noise"]


def test_a_report_that_cannot_be_written_is_named_and_leaves_no_temporary_file(full_eval, tmp_path, capsys):
    out = tmp_path / "blocked"
    (out / REPORT_NAME).mkdir(parents=True)  # the report's place is taken by a directory
    code, _, stderr = evaluate([*full_eval["args"], "--out", str(out), "--etas", "2", "--fpack-tiles", "0",
                                "--no-plots", "--no-tensorboard"], capsys)
    assert code == 2 and f"{out / REPORT_NAME}:" in stderr and ".tmp" not in stderr, stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.mpi
def test_an_error_on_rank_0_alone_ends_the_two_rank_job(full_eval, tmp_path, mpirun):
    """Rank 0 alone writes the report; when it cannot, rank 1 must not wait for it for ever."""
    out = tmp_path / "blocked"
    (out / REPORT_NAME).mkdir(parents=True)  # the report's place is taken by a directory
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "evaluate", *full_eval["args"], "--out", str(out),
                      "--etas", "2", "--fpack-tiles", "0", "--no-plots", "--no-tensorboard"],
                  env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert proc.returncode == 2 and "fitsae evaluate: cannot write" in proc.stderr, proc.stdout + proc.stderr


@pytest.mark.mpi
def test_two_ranks_give_the_single_process_numbers(full_eval, tmp_path, mpirun):
    assert full_eval["code"] == 0
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "evaluate", *full_eval["args"], "--out", str(tmp_path / "two"),
                      "--no-plots", "--no-tensorboard"], env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one = json.loads((full_eval["out"] / REPORT_NAME).read_text())
    two = json.loads((tmp_path / "two" / REPORT_NAME).read_text())
    assert two["data"]["ranks"] == 2 and one["data"]["n_tiles"] == two["data"]["n_tiles"] == 12
    # The worst tile is found over both ranks' shares.
    assert [t["tile_id"] for t in two["examples"]["tiles"]] == [t["tile_id"] for t in one["examples"]["tiles"]]
    # Sums combine exactly, and the codec encodes and decodes every tile alone (its float32 outputs
    # cannot depend on which tiles share a batch): every number agrees to float64 summation order.
    for a, b in zip(one["results"], two["results"], strict=True):
        for method, rel in (("ae", 1e-9), ("ae_fixed_mask", 1e-9), ("pca", 1e-9)):
            for key, value in a[method].items():
                if key in ("n_pixels", "tiles_by_eta_kept", "z_hist"):
                    assert b[method][key] == value, key
                elif key in ("bands", "photometry"):  # a list of dicts, a dict
                    parts = zip(value, b[method][key], strict=True) if key == "bands" else [(value, b[method][key])]
                    for part_a, part_b in parts:
                        for name, v in part_a.items():
                            expected = v if v is None else pytest.approx(v, rel=rel)
                            assert part_b[name] == expected, (method, key, name)
                else:  # ℓ∞ errors too: they reduce as maxima, not sums
                    expected = value if value is None else pytest.approx(value, rel=rel)
                    assert b[method][key] == expected, (method, key)
    for family in ("fpack", "jpegxl"):
        for a, b in zip(one["baselines"][family], two["baselines"][family], strict=True):
            assert b["bits_per_pixel"] == a["bits_per_pixel"] and b["n_tiles"] == a["n_tiles"] == 8
            assert b["bits_per_pixel_with_headers"] == a["bits_per_pixel_with_headers"]
            for key in ("rmse_over_noise", "max_abs_error", "median_abs_error_over_noise"):
                assert b[key] == pytest.approx(a[key], rel=1e-9), (family, key)
    # The tables are printed once, by rank 0.
    assert proc.stdout.count("AE vs PCA") == 1 and proc.stdout.count("RICE_1 q=4 ") == 1
