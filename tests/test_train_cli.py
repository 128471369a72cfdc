"""``fitsae train`` argument and config handling (no training needed to reach these paths)."""

from pathlib import Path

import pytest

from fitsae.cli.train import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "train").glob("*.yaml"))


def test_unknown_key_is_a_usage_error(tmp_path, capsys):
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", "train.stpes=3"])
    assert code == 2
    assert "train.stpes" in capsys.readouterr().err


def test_missing_config_without_a_run_to_resume(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path / "r")]) == 2
    assert "--config" in capsys.readouterr().err


def test_data_without_fits_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", f"data.paths=[{tmp_path / 'empty'}]"])
    assert code == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_named_configs_are_valid(path):
    from fitsae.config import load
    from fitsae.models import build_model
    from fitsae.train.config import ExperimentConfig, training_image_shape

    cfg = load(ExperimentConfig, path)
    model = build_model(cfg.model, training_image_shape(cfg))
    assert model.latent_channels == cfg.model.latent_channels
    if cfg.data.crop and cfg.model.kind == "conv":
        assert cfg.data.crop % model.stride == 0 and cfg.data.tile % model.stride == 0


def test_every_file_deleted_after_indexing_is_a_clear_error(tmp_path, capsys):
    from fitsae.cli import index as index_cli
    from fitsae.cli import simulate as simulate_cli

    assert simulate_cli.main(["--kind", "toy", "--n", "4", "--size", "32", "--out", str(tmp_path / "d"),
                              "--seed", "0"]) == 0
    assert index_cli.main([str(tmp_path / "d"), "--out", str(tmp_path / "m.jsonl"), "--tile", "32"]) == 0
    for path in (tmp_path / "d").iterdir():
        path.unlink()
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", f"data.paths=[{tmp_path / 'm.jsonl'}]", "--set", "data.batch_size=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "none of the last 4 tiles" in err and "could be read" in err and "index the data again" in err
    assert "function_node" not in err


def test_tile_not_a_multiple_of_the_stride_is_refused_before_training(tmp_path, capsys):
    # smoke: filters [8, 16], two stages of stride 2, total stride 4.
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", "data.tile=30"])
    assert code == 2
    err = capsys.readouterr().err
    assert "data.tile=30 is not a multiple of the conv model's total stride 4" in err
    assert "use data.tile=28 or 32" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_crop_not_a_multiple_of_the_stride_is_refused(tmp_path, capsys):
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", "data.crop=18", "--check"])
    assert code == 2
    assert "data.crop=18 is not a multiple of the conv model's total stride 4" in capsys.readouterr().err


def test_a_flux_window_larger_than_the_training_images_is_refused(tmp_path, capsys):
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--set", "data.crop=16", "--set", "model.flux_weight=1", "--set", "model.flux_window=32", "--check"])
    assert code == 2
    assert "model.flux_window=32 is larger than the training images (data.crop=16)" in capsys.readouterr().err


def test_check_reads_the_config_and_data_paths_without_training(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    args = ["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"), "--check"]
    assert main(args + ["--set", f"data.paths=[{tmp_path / 'data'}]"]) == 0
    assert "config OK" in capsys.readouterr().err
    assert main(args + ["--set", f"data.paths=[{tmp_path / 'data'},{tmp_path / 'typo'}]"]) == 2
    err = capsys.readouterr().err
    assert f"no such file, directory or glob match: {tmp_path / 'typo'}" in err
    assert not (tmp_path / "r").exists()


def test_a_learning_rate_written_3e_3_passes_the_check(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code = main(["--config", str(REPO / "train" / "smoke.yaml"), "--run-dir", str(tmp_path / "r"), "--check",
                 "--set", f"data.paths=[{tmp_path / 'data'}]", "--set", "optimizer.learning_rate=3e-3"])
    assert code == 0, capsys.readouterr().err


def test_relative_data_paths_resume_from_another_directory(tmp_path, monkeypatch):
    import yaml

    from fitsae.train.checkpoints import list_checkpoints
    from train_helpers import write_blob_fits

    project = tmp_path / "project"
    write_blob_fits(project / "fits", 4, 16, seed=1)
    config = {"data": {"paths": ["fits"], "tile": 16, "batch_size": 4},
              "model": {"kind": "conv", "latent_channels": 2, "filters": [4, 4]},
              "train": {"steps": 2, "checkpoint_every": 2, "log_every": 2, "image_every": 0, "export": False,
                        "progress": False}}
    (project / "exp.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    monkeypatch.chdir(project)
    assert main(["--config", "exp.yaml", "--run-dir", str(run)]) == 0
    saved = yaml.safe_load((run / "params.yaml").read_text())
    assert saved["data"]["paths"] == [str(project / "fits")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--run-dir", str(run), "--set", "train.steps=4"]) == 0
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]
