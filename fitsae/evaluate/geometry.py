"""The part of a test tile a model scores, and the code sizes (AE latents, PCA patches) there.

Contract: :class:`Geometry` is built from a model and the test tile shape, and every method
(AE, PCA, fpack, JPEG-XL) is scored on the same region :meth:`Geometry.crop` cuts, so their
errors and bits per pixel compare like for like.
"""

from __future__ import annotations

import numpy as np

from fitsae.evaluate.options import EvaluationError

__all__ = ["Geometry"]


class Geometry:
    """Which pixels of a tile every method scores, and the AE/PCA code sizes there.

    The model says which region (:meth:`fitsae.models.protocol.TileScoring.scored_shape`): a
    dense model's trained size, centre-cropped, or the largest part divisible by the stride. PCA
    keeps whole images for a fixed-size model and stride × stride patches otherwise.
    """

    def __init__(self, model, tile_shape: tuple[int, int]):
        self.kind = model.model_config.kind  # recorded in the report, never switched on
        self.fixed = bool(model.fixed_size)
        self.channels = int(model.latent_channels)
        self.stride = int(model.stride)
        th, tw = tile_shape
        try:
            self.shape = model.scored_shape(tile_shape)
        except ValueError as err:
            raise EvaluationError(str(err)) from err
        self.patch = self.shape if self.fixed else (self.stride, self.stride)
        self.tile_shape = (th, tw)
        h, w = self.shape
        self.y0, self.x0 = (th - h) // 2, (tw - w) // 2
        self.pixels = h * w
        self.positions = (h // self.patch[0]) * (w // self.patch[1])

    def crop(self, x: np.ndarray) -> np.ndarray:
        h, w = self.shape
        return x[:, self.y0:self.y0 + h, self.x0:self.x0 + w]

    def latent_values(self, eta: int) -> int:
        return int(eta) * self.positions

    @property
    def pca_dim(self) -> int:
        return self.patch[0] * self.patch[1]

    def as_dict(self) -> dict:
        return {"tile_shape": list(self.tile_shape), "eval_shape": list(self.shape),
                "eval_offset": [self.y0, self.x0], "pca_patch": list(self.patch),
                "latent_positions": self.positions}

