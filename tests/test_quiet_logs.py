"""Quiet by default: TensorFlow's and XLA's own log lines are hidden, ``--verbose`` shows them; a
typo is answered before TensorFlow (or numpy and astropy) are even imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval_helpers import CONV, clean_env, shared_run

FITSAE = Path(sys.executable).parent / "fitsae"
# TensorFlow's own format ("2026-… I tensorflow/…cpu_feature_guard.cc:210] …") and absl's
# ("I0000 00:00:1796…  1234 service.cc:148] …", plus its banner).
TF_LINE = re.compile(r"^\S+ \S+: [IW] tensorflow/|^I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|absl::InitializeLog", re.M)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv", CONV)


@pytest.mark.slow
def test_tensorflow_lines_are_hidden_by_default_and_shown_with_verbose(conv_run, tmp_path):
    """Training reads FITS through jit-compiled decoders, so XLA starts and logs too."""
    env = {k: v for k, v in clean_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    stderr = {}
    for mode, extra in (("quiet", []), ("verbose", ["--verbose"])):
        proc = subprocess.run([str(FITSAE), "train", "--config", str(conv_run["base"] / "run.yaml"),
                               "--run-dir", str(tmp_path / mode), "--set", "train.steps=2", "--set", "train.log_every=1",
                               "--set", "train.progress=true", *extra],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        stderr[mode] = proc.stderr
    # Quiet: only fitsae's own lines ("HH:MM:SS LEVEL message").
    assert TF_LINE.findall(stderr["quiet"]) == [], stderr["quiet"]
    assert re.findall(r"^(?!\d\d:\d\d:\d\d (?:INFO|WARNING) ).+$", stderr["quiet"], re.M) == [], stderr["quiet"]
    assert "step 2/2" in stderr["quiet"]
    shown = TF_LINE.findall(stderr["verbose"])
    assert "cpu_feature_guard" in stderr["verbose"] and "XLA service" in stderr["verbose"], stderr["verbose"]
    assert len(shown) >= 3, stderr["verbose"]


def _heavy_modules_after(args: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Exit code, stderr and which of numpy/astropy/tensorflow ``fitsae ARGS`` imported."""
    code = ("import json, sys; from fitsae.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps([rc, sorted(m for m in ('numpy', 'astropy', 'tensorflow') if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(), timeout=120)
    rc, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, proc.stderr, modules


@pytest.mark.parametrize("args, expect", [
    (["index", "/no/such/path", "--out", "m.jsonl"], "fitsae index: no such file, directory or glob match: /no/such/path"),
    (["compress", "--run-dir", "run", "--eta", "2", "/no/such.fits", "--out", "c.fits"],
     "fitsae compress: nothing to compress, no such file, directory or glob match: /no/such.fits"),
    (["decompress", "/no/such.fae.fits", "--out", "d.fits"], "fitsae decompress: nothing to decompress"),
    (["train", "--config", "/no/such.yaml", "--run-dir", "r"], "cannot read config /no/such.yaml"),
], ids=["index", "compress", "decompress", "train"])
def test_a_typo_is_answered_before_heavy_imports(tmp_path, args, expect):
    rc, stderr, modules = _heavy_modules_after(args, tmp_path)
    assert rc == 2 and expect in stderr, stderr
    assert modules == [], modules
    assert list(tmp_path.iterdir()) == []  # and nothing was written


def test_compress_names_a_missing_run_before_loading_tensorflow(tmp_path):
    (tmp_path / "image.fits").write_bytes(b"")
    rc, stderr, modules = _heavy_modules_after(["compress", "--run-dir", "nowhere", "--eta", "2", "image.fits",
                                                "--out", "c.fits"], tmp_path)
    assert rc == 2 and "nowhere is not a run directory (no params.yaml)" in stderr, stderr
    assert "tensorflow" not in modules


def test_check_never_imports_tensorflow(tmp_path):
    (tmp_path / "data").mkdir()
    rc, stderr, modules = _heavy_modules_after(
        ["train", "--config", str(Path(__file__).resolve().parents[1] / "train" / "smoke.yaml"), "--run-dir", "r",
         "--check", "--set", f"data.paths=[{tmp_path / 'data'}]"], tmp_path)
    assert rc == 0 and "config OK" in stderr, stderr
    assert "tensorflow" not in modules


def test_the_filter_drops_only_absl_info_lines():
    from fitsae.cli.quiet import NOISE

    dropped = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
               b"I0000 00:00:1796218223.432971   23019 service.cc:148] XLA service 0x7fa2 initialized for platform Host",
               b"I0000 00:00:1796218223.582726   23019 device_compiler.h:188] Compiled cluster using XLA!"]
    kept = [b"E0000 00:00:1796218223.582726   23019 cuda_dnn.cc:8310] Unable to register cuDNN factory",
            b"W0000 00:00:1796218223.582726   23019 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
            b"13:30:31 INFO step 10/30  mse 3.262  nll 2.431  10 img/s  ETA 1s",
            b"fitsae train: SIGINT received, stopping after this step and checkpointing"]
    assert [bool(NOISE.match(line)) for line in dropped + kept] == [True] * 3 + [False] * 4
