"""What the rest of fitsae asks a model, so that only ``fitsae.models`` knows model kinds.

Contract: every model (:class:`~fitsae.models.tunable.TunableAutoencoder`,
:class:`~fitsae.models.bvae.BetaVAE`) answers

- **its rate knob**, ``rate_control``: ``"eta"`` (the integer number of kept latent channels,
  ``encode(x, eta)``) or ``"logbeta"`` (log10 β, a float input of encoder and decoders);
- **what it scores in a tile**, :meth:`TileScoring.scored_shape`: the whole trained image size
  for a fixed-size (dense) model, else the largest part of the tile divisible by ``stride``;
  and ``fixed_size``, whether its latent is one vector per image (PCA then keeps whole images);
- **how it evaluates a batch**: by ``rate_control`` — through the codec
  (:class:`fitsae.codec.encoder.TileCodec`) at each η, or ``rate_distortion_terms(x, logbeta,
  noise, seed)`` at each log β (:mod:`fitsae.evaluate.bvae_rd`).

One reason: a switch on ``model.kind`` outside this package let ``evaluate --watch`` score a β-VAE
with the tunable AE's code; asking the model makes a new kind an edit of its own module only.
"""

from __future__ import annotations

__all__ = ["TileScoring"]


class TileScoring:
    """Mixin: the region of a test tile a model scores (needs ``fixed_size``, ``image_shape``, ``stride``)."""

    fixed_size: bool

    def scored_shape(self, tile_shape: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the centred region of a ``tile_shape`` tile this model encodes.

        Raises
        ------
        ValueError
            The tile is smaller than a fixed-size model's input, or than one stride.
        """
        th, tw = (int(v) for v in tile_shape)
        if self.fixed_size:
            mh, mw = (int(v) for v in self.image_shape[:2])
            if th < mh or tw < mw:
                raise ValueError(
                    f"test tiles are {th}×{tw} but the dense model was trained on {mh}×{mw} images; "
                    "evaluate with data of at least that size (dense models are tied to their input size)"
                )
            return (mh, mw)
        shape = (th - th % self.stride, tw - tw % self.stride)
        if min(shape) < self.stride:
            raise ValueError(f"test tiles {th}×{tw} are smaller than the model's stride {self.stride}")
        return shape
