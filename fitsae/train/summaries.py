"""TensorBoard output of a run (rank 0 only): scalars, image panels and the config.

Scalars are averaged over all ranks by the loop before they arrive here. Image panels show, for a
few fixed η, the input, the reconstruction μ, the predicted σ and the residual side by side, with
an asinh stretch so faint structure and bright cores are both visible.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

__all__ = ["Summaries", "asinh_stretch", "render"]

# Residuals are shown over ±RESIDUAL_RANGE noise σ (normalized data have noise ≈ 1).
RESIDUAL_RANGE = 5.0


def asinh_stretch(images: tf.Tensor, low: tf.Tensor, high: tf.Tensor) -> tf.Tensor:
    """Map ``images`` to [0, 1] with asinh between per-example ``low`` and ``high`` (shape (B,)).

    In normalized units the noise σ is about 1, so asinh is linear within the noise and
    logarithmic for sources, the usual display stretch for astronomical images.
    """
    low = tf.asinh(low)[:, None, None, None]
    high = tf.asinh(high)[:, None, None, None]
    return tf.clip_by_value((tf.asinh(images) - low) / tf.maximum(high - low, 1e-6), 0.0, 1.0)


def render(x: tf.Tensor, mu: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """[input | μ | σ | residual] per example from a prediction (μ, log σ²) of ``x``."""
    x = tf.convert_to_tensor(x, tf.float32)
    sigma = tf.exp(0.5 * log_var)
    axes = [1, 2, 3]
    low, high = tf.reduce_min(x, axis=axes), tf.reduce_max(x, axis=axes)
    columns = [
        asinh_stretch(x, low, high),
        asinh_stretch(mu, low, high),
        asinh_stretch(sigma, tf.reduce_min(sigma, axis=axes), tf.reduce_max(sigma, axis=axes)),
        asinh_stretch(x - mu, tf.fill(tf.shape(low), -RESIDUAL_RANGE), tf.fill(tf.shape(low), RESIDUAL_RANGE)),
    ]
    separator = tf.ones_like(x[:, :, :1, :])
    pieces = []
    for i, column in enumerate(columns):
        if i:
            pieces.append(separator)
        pieces.append(column)
    return tf.concat(pieces, axis=2)


class Summaries:
    """Writer for ``RUN/tb``; every method is a no-op when ``enabled`` is false (ranks > 0)."""

    def __init__(self, run_dir, enabled: bool):
        self.enabled = enabled
        self._writer = tf.summary.create_file_writer(str(Path(run_dir) / "tb")) if enabled else None

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, float(value))

    def text(self, step: int, tag: str, text: str) -> None:
        if not self.enabled:
            return
        with self._writer.as_default(step=step):
            tf.summary.text(tag, tf.constant(text))

    def images(self, step: int, model, x, etas) -> None:
        """One panel per rate setting the model offers (``images/eta_<η>`` for the tunable AEs,
        ``images/logbeta_<v>`` for the β-VAE): input | μ | σ | residual."""
        if not self.enabled:
            return
        with self._writer.as_default(step=step):
            for tag, (mu, log_var) in model.image_predictions(x, etas).items():
                tf.summary.image(f"images/{tag}", render(x, mu, log_var), max_outputs=int(x.shape[0]))
            for tag, value in model.coded_rates(x, etas).items():
                tf.summary.scalar(tag, float(value))

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
