"""Strict config loading: defaults → YAML → --set, unknown keys and wrong types rejected by name."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from fitsae.config import ConfigError, apply_overrides, dump, from_dict, load, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    widths: list[int] = field(default_factory=lambda: [8, 16])
    crop: Optional[int] = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    name: str = "x"
    flag: bool = False


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\ninner:\n  lr: 0.01\n")
    cfg = load(Outer, path, ["inner.schedule=cosine", "inner.widths=[4, 5]", "inner.crop=32", "flag=true"])
    assert cfg == Outer(inner=Inner(lr=0.01, schedule="cosine", widths=[4, 5], crop=32), steps=20, flag=True)


def test_an_exponent_without_a_dot_is_a_number_in_the_file_and_in_overrides(tmp_path):
    # YAML 1.1, which PyYAML follows, reads 1e-3 as the string '1e-3'.
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 1e-3\n")
    assert load(Outer, path).inner.lr == 0.001
    assert load(Outer, path, ["inner.lr=3e-3"]).inner.lr == 0.003
    assert load(Outer, path, ["inner.lr=-.5E+2"]).inner.lr == -50.0


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"inner\.lrr.*valid keys in inner: crop, lr, schedule, widths"):
        load(Outer, path)


def test_unknown_override_section():
    with pytest.raises(ConfigError, match="unknown config key"):
        load(Outer, None, ["nosuch.key=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=ten", "steps: expected an integer"),
        ("steps=1.5", "steps: expected an integer"),
        ("flag=1", "flag: expected true or false"),
        ("inner.schedule=linear", "not one of"),
        ("inner.widths=3", "expected a list"),
        ("steps", "expected section.key=value"),
        ("steps.x=1", "steps: expected an integer"),
    ],
)
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load(Outer, None, [override])


def test_round_trip_through_yaml(tmp_path):
    cfg = Outer(inner=Inner(lr=0.5, widths=[1]), steps=3)
    dump(cfg, tmp_path / "params.yaml")
    assert load(Outer, tmp_path / "params.yaml") == cfg
    assert to_dict(cfg)["inner"]["widths"] == [1]


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load(Outer, path)


def test_overrides_do_not_mutate_input():
    base = {"inner": {"lr": 1.0}}
    apply_overrides(base, ["inner.lr=2"])
    assert base == {"inner": {"lr": 1.0}}


def test_int_is_accepted_for_float():
    assert from_dict(Inner, {"lr": 1}).lr == 1.0


def test_errors_say_which_source_holds_the_bad_key(tmp_path):
    path = tmp_path / "smoke.yaml"
    path.write_text("steps: 20\ninner:\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as err:
        load(Outer, path, ["steps=30", "inner.lrr=0.1"])
    assert str(err.value).endswith("(from --set inner.lrr=0.1)") and "smoke.yaml" not in str(err.value)
    path.write_text("steps: 20\ninner:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError, match=r"inner\.lrr.*\(in .*smoke\.yaml\)$"):
        load(Outer, path, ["steps=30"])
    with pytest.raises(ConfigError, match=r"\(from --set flag=yes_please\)$"):
        load(Outer, None, ["flag=yes_please"])


def test_train_cli_names_the_bad_set_item(tmp_path, capsys):
    from pathlib import Path

    from fitsae.cli import train as train_cli

    smoke = Path(__file__).resolve().parents[1] / "train" / "smoke.yaml"
    code = train_cli.main(["--config", str(smoke), "--run-dir", str(tmp_path / "run"), "--set", "model.eta.per=example"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key(s) model.eta" in err
    assert "(from --set model.eta.per=example)" in err and "smoke.yaml" not in err
