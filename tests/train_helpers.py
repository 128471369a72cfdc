"""Shared pieces of the TRAIN-area tests: tiny configs, reading TensorBoard events and weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from fitsae.config import from_dict
from fitsae.train.config import ExperimentConfig


def tiny_config(**sections) -> ExperimentConfig:
    """A conv model small enough that a step takes milliseconds; ``sections`` override keys."""
    base = {
        "data": {"tile": 16, "batch_size": 8},
        "model": {"kind": "conv", "latent_channels": 4, "filters": [8, 8]},
        "optimizer": {"learning_rate": 0.003},
        "train": {"steps": 20, "log_every": 5, "image_every": 10, "checkpoint_every": 10, "progress": False},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return from_dict(ExperimentConfig, base)


def blobs(n: int, size: int, seed: int = 0, per_image: int = 2) -> np.ndarray:
    """Gaussian blobs on unit noise: structure an autoencoder can learn in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = rng.normal(size=(n, size, size)).astype(np.float32)
    for img in out:
        for _ in range(per_image):
            cy, cx = rng.uniform(2, size - 2, 2)
            img += rng.uniform(5, 20) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1, 3) ** 2))
    return out


def write_blob_fits(directory, n: int, size: int, seed: int = 0) -> Path:
    """``n`` FITS files of dense blob fields (NOISE = 1 in the header, background 100)."""
    from astropy.io import fits

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(blobs(n, size, seed, per_image=size * size // 128)):
        hdu = fits.PrimaryHDU(100.0 + image)
        hdu.header["NOISE"] = 1.0
        hdu.writeto(directory / f"blobs_{i:03d}.fits")
    return directory


def read_events(run_dir) -> dict[str, list[tuple[int, str, object]]]:
    """{tag: [(step, plugin, value)]} from every event file in ``RUN/tb``; scalars as floats."""
    tags: dict = {}
    for path in sorted(Path(run_dir, "tb").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                content = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if plugin == "scalars":
                    content = float(content)
                tags.setdefault(value.tag, []).append((event.step, plugin, content))
    return tags


def model_weights(model) -> list[np.ndarray]:
    return [v.numpy() for v in model.variables]
