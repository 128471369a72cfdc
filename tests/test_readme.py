"""Every config key and value the READMEs name is one ``fitsae train`` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fitsae.config import ConfigError, apply_overrides, from_dict, to_dict
from fitsae.train.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", REPO / "slurm" / "README.md")
SECTIONS = tuple(to_dict(ExperimentConfig()))
# `section.key`, `section.key: a|b|c` and `section.key=value` in backticks; --set section.key=value in commands.
DOTTED = re.compile(r"`(?P<key>(?:%s)(?:\.[\w*]+)+)(?:(?::\s*|=)(?P<value>[^`]+))?`" % "|".join(SECTIONS))
SET = re.compile(r"--set (?P<key>(?:%s)(?:\.\w+)+)=(?P<value>[^\s`]+)" % "|".join(SECTIONS))
# `key: a|b` without a section: the key must exist in some section.
BARE = re.compile(r"`(?P<key>[a-z_]+):\s*(?P<value>[a-z0-9_.-]+(?:\|[a-z0-9_.-]+)*)`")
# "(`model.bvae`): `architecture` (dense | conv), `beta_ref`, ...": the keys listed after a section.
LISTED = re.compile(r"\(`(?P<section>(?:%s)(?:\.\w+)*)`\):(?P<rest>.*?)\.(?:\s|$)" % "|".join(SECTIONS), re.S)
FILE_SUFFIXES = {"sbatch", "yaml", "sh", "py", "json", "jsonl", "fits", "png", "csv", "sif", "def", "md"}


def _mentions() -> list[tuple[str, str, str | None]]:
    """(doc, dotted key, value or None) for every config key a README names."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for pattern in (DOTTED, SET):
            for m in pattern.finditer(text):
                if m["key"].rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                    found.append((doc.name, m["key"], m["value"]))
        for m in LISTED.finditer(text):
            for key in re.findall(r"`(\w+)`", m["rest"]):
                found.append((doc.name, f"{m['section']}.{key}", None))
    return found


def _fields(section: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in section.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _fields(value, f"{prefix}{key}.")
    return out


def _placeholder(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Z]+|value|\w+\.\.\.", value))


def test_the_readmes_name_config_keys():
    keys = {key for _, key, _ in _mentions()}
    assert {"model.eta_per", "model.eta_distribution", "data.normalization", "data.noise"} <= keys


@pytest.mark.parametrize("doc, key, value", _mentions(), ids=lambda v: str(v))
def test_named_key_and_values_are_accepted(doc, key, value):
    known = _fields(to_dict(ExperimentConfig()))
    if key.endswith(".*"):
        assert key[:-2] in known, f"{doc}: `{key}` names no config section"
        return
    assert key in known, f"{doc}: `{key}` is not a config key"
    if value is None or _placeholder(value):
        return
    for alternative in value.split("|"):
        try:
            from_dict(ExperimentConfig, apply_overrides({}, [f"{key}={alternative.strip()}"]))
        except ConfigError as err:
            pytest.fail(f"{doc}: `{key}: {alternative}` is refused: {err}")


def test_bare_keys_exist_in_some_section():
    known = {name.rsplit(".", 1)[-1] for name in _fields(to_dict(ExperimentConfig()))}
    for doc in DOCS:
        for m in BARE.finditer(doc.read_text()):
            assert m["key"] in known, f"{doc.name}: `{m['key']}: {m['value']}` names no config key"
