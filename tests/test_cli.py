"""The ``fitsae`` dispatcher: every verb answers --help, bad verbs and options exit non-zero."""

import subprocess
import sys
from pathlib import Path

import pytest

from fitsae import __version__
from fitsae.cli import VERBS, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fitsae {__version__}"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert f"fitsae {verb}" in capsys.readouterr().out


def test_unknown_verb_prints_usage_and_fails(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown verb" in err and "usage: fitsae" in err


def test_unknown_option_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_no_arguments_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: fitsae" in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "fitsae"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"fitsae {__version__}"
