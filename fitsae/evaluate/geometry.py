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

    Dense models see exactly the image size they were trained on, so larger tiles are
    centre-cropped to it; conv models see the largest part of the tile divisible by their stride.
    AE, PCA and fpack are all scored on this same region.
    """

    def __init__(self, model, tile_shape: tuple[int, int]):
        self.kind = model.model_config.kind
        self.channels = int(model.latent_channels)
        self.stride = int(model.stride)
        th, tw = tile_shape
        if self.kind == "dense":
            mh, mw = model.image_shape[:2]
            if th < mh or tw < mw:
                raise EvaluationError(
                    f"test tiles are {th}×{tw} but the dense model was trained on {mh}×{mw} images; "
                    "evaluate with data of at least that size (dense models are tied to their input size)"
                )
            self.shape = (int(mh), int(mw))
            self.patch = self.shape
        else:
            self.shape = (th - th % self.stride, tw - tw % self.stride)
            if min(self.shape) < self.stride:
                raise EvaluationError(f"test tiles {th}×{tw} are smaller than the model's stride {self.stride}")
            self.patch = (self.stride, self.stride)
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

