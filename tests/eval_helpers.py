"""Small real inputs for the evaluation tests: FITS fields on disk and tiny trained runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

ASTROPY_DATA = Path(fits.__file__).parent
CONV = {"kind": "conv", "latent_channels": 4, "filters": [8, 8]}
DENSE = {"kind": "dense", "latent_channels": 6, "hidden": [], "activation": "linear"}
CONV_RATE = {**CONV, "rate_lambda": 4.0}


def write_fields(directory: Path, n: int, seed: int, size: int = 32, truth: bool = False) -> Path:
    """``n`` float32 FITS images: Gaussian sources on a 100-count sky with σ = 2 noise; with
    ``truth``, the noiseless image beside it as a ``TRUTH`` HDU (as ``fitsae simulate`` writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = 100.0 + rng.normal(scale=2.0, size=(size, size))
        clean = np.full((size, size), 100.0)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            width, amp = rng.uniform(1.5, 4.0), rng.uniform(10.0, 80.0)
            source = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width * width))
            img += source
            clean += source
        hdus = [fits.PrimaryHDU(img.astype(np.float32))]
        if truth:
            hdus.append(fits.ImageHDU(clean.astype(np.float32), name="TRUTH"))
        fits.HDUList(hdus).writeto(directory / f"field{i:03d}.fits")
    return directory


def train_run(run_dir: Path, train_dir: Path, model: dict, tile: int = 16, steps: int = 20,
              checkpoint_every: int = 10, data: dict | None = None) -> Path:
    """Train a tiny run with the real ``fitsae train`` CLI, in a subprocess (own TF runtime);
    ``data`` adds keys to the data section."""
    config = {
        "data": {"paths": [str(train_dir)], "tile": tile, "batch_size": 8, **(data or {})},
        "model": model,
        "optimizer": {"learning_rate": 3e-3},
        "train": {"steps": steps, "checkpoint_every": checkpoint_every, "log_every": steps,
                  "image_every": 0, "export": False, "progress": False},
    }
    cfg_path = run_dir.parent / f"{run_dir.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "fitsae", "train", "--config", str(cfg_path), "--run-dir", str(run_dir)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir


def container_payload(path: Path) -> int:
    """Bytes of the coded data in a ``.fae.fits`` container, read from the file: every tile row's
    byte columns (latents, masks, coded pixels)."""
    total = 0
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.name == "TILES":
                for column in ("DATA", "MASK", "RDATA", "ZEROS"):
                    if column in hdu.data.columns.names:
                        total += sum(len(v) for v in hdu.data[column])
    return total


def run_fitsae(*args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m fitsae ARGS...`` in a child process, as a user runs it; asserts exit 0."""
    proc = subprocess.run([sys.executable, "-m", "fitsae", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=clean_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def clean_env() -> dict:
    """This environment minus any MPI launcher variables (a child must not think it is a rank)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", FITSAE_THREADS="1")
    return env


_RUNS: dict = {}


def shared_run(tmp_path_factory, name: str, model: dict, tile: int = 16, steps: int = 20,
               checkpoint_every: int = 10) -> dict:
    """A tiny trained run shared by every eval test module of the session (trained once)."""
    if name not in _RUNS:
        base = tmp_path_factory.mktemp(f"eval_{name}")
        train_dir = write_fields(base / "train", 12, seed=1)
        test_dir = write_fields(base / "test", 3, seed=2)
        run = train_run(base / "run", train_dir, model, tile=tile, steps=steps, checkpoint_every=checkpoint_every)
        _RUNS[name] = {"base": base, "run": run, "train": train_dir, "test": test_dir}
    return _RUNS[name]
