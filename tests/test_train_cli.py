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
