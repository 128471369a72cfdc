"""The ``optimizer:`` and ``train:`` sections, and the full experiment config they complete.

``ExperimentConfig`` is what ``fitsae train --config FILE --set k=v`` resolves and what every run
records as ``RUN/params.yaml``; evaluation rebuilds the model from that file alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from fitsae.config import ConfigError
from fitsae.data.config import DataConfig
from fitsae.models.config import ModelConfig

__all__ = ["OptimizerConfig", "TrainConfig", "ExperimentConfig"]


@dataclass
class OptimizerConfig:
    """Both optimizers: 1 trains encoder + mean decoder on the MSE, 2 the variance decoder on the NLL.

    Attributes
    ----------
    name : {"adam", "adamw", "sgd"}
        Used for both optimizers (each has its own state).
    learning_rate : float
        Peak learning rate of optimizer 1 for a single rank.
    variance_learning_rate : float, optional
        Peak learning rate of optimizer 2; defaults to ``learning_rate``.
    schedule : {"constant", "cosine", "exponential"}
        After ``warmup_steps`` of linear warm-up: constant; cosine decay to
        ``final_fraction``·peak at ``decay_steps``; or exponential decay by ``final_fraction``
        every ``decay_steps``.
    warmup_steps : int
    decay_steps : int, optional
        Defaults to ``train.steps``.
    final_fraction : float
    scale_with_world_size : {"none", "linear", "sqrt"}
        ``batch_size`` is per rank and gradients are averaged over ranks, so N ranks train with an
        N× larger global batch. ``linear`` multiplies the peak rates by N (Goyal et al. 2017; pair
        it with warm-up), ``sqrt`` by √N (usual for Adam). Default ``none``: the same config gives
        the same rates on any number of ranks, so runs on a laptop and a cluster compare directly.
    clipnorm : float, optional
        Clip each optimizer's global gradient norm.
    weight_decay : float
        AdamW only.
    momentum : float
        SGD only.
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = 1e-3
    variance_learning_rate: Optional[float] = None
    schedule: Literal["constant", "cosine", "exponential"] = "constant"
    warmup_steps: int = 0
    decay_steps: Optional[int] = None
    final_fraction: float = 0.1
    scale_with_world_size: Literal["none", "linear", "sqrt"] = "none"
    clipnorm: Optional[float] = None
    weight_decay: float = 1e-4
    momentum: float = 0.9

    def __post_init__(self):
        if self.learning_rate <= 0 or (self.variance_learning_rate is not None and self.variance_learning_rate <= 0):
            raise ValueError("learning rates must be positive")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1, got {self.decay_steps}")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")


@dataclass
class TrainConfig:
    """Length, seeds and bookkeeping of a run.

    Attributes
    ----------
    steps : int
        Total optimizer steps (each rank processes one batch per step). Resuming continues to it.
    seed : int
        Global seed: weight initialisation (identical on every rank, then broadcast anyway) and the
        in-graph η draws (folded with rank and step). The data pipeline gets (seed, rank).
    log_every : int
        Steps between averaged scalar summaries and progress lines.
    image_every : int
        Steps between image summaries (0: only at the end).
    checkpoint_every : int
        Steps between checkpoints (a final one is always written).
    keep_checkpoints : int
        Checkpoints kept by the CheckpointManager.
    image_etas : list of int
        η values shown in image summaries; empty picks 1, C/4, C/2 and C.
    image_count : int
        Examples per image summary.
    eta_buckets : int
        MSE is also logged per η bucket (log-spaced over 1..C).
    export : bool
        Write ``RUN/export/`` (SavedModel for inference) when training finishes.
    progress : bool
        Rank 0 prints a progress line every ``log_every`` steps.
    trace_eta : bool
        Append every rank's η of every step to ``RUN/eta_trace.jsonl`` (for checking that η
        varies between steps and ranks; the file grows with steps × ranks).
    """

    steps: int = 1000
    seed: int = 0
    log_every: int = 50
    image_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    image_etas: list[int] = field(default_factory=list)
    image_count: int = 3
    eta_buckets: int = 4
    export: bool = True
    progress: bool = True
    trace_eta: bool = False

    def __post_init__(self):
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "image_count", "eta_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_every < 0:
            raise ValueError(f"train.image_every must be >= 0, got {self.image_every}")


@dataclass
class ExperimentConfig:
    """Everything a run needs; saved as ``RUN/params.yaml``.

    Checks that need two sections are made here, when the config is read, so a bad combination
    is a config error before any data are read or TensorFlow starts.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        # Training feeds crops (or whole tiles) to the model; evaluation and compression trim
        # tiles to a multiple of the stride themselves, so only the training side must divide.
        stride = self.model.total_stride
        key = "crop" if self.data.crop else "tile"
        side = getattr(self.data, key)
        if side % stride:
            lower, upper = side - side % stride, side - side % stride + stride
            choices = f"{lower} or {upper}" if lower else str(upper)
            raise ConfigError(
                f"data.{key}={side} is not a multiple of the conv model's total stride {stride} "
                f"(model strides {self.model.stage_strides}): use data.{key}={choices}"
            )
        if self.model.flux_weight is not None and self.model.flux_window > side:
            raise ConfigError(f"model.flux_window={self.model.flux_window} is larger than the training images "
                              f"(data.{key}={side}): the flux term would have no window to sum")


def _side_pair(value) -> tuple[int, int] | None:
    if value is None or value == 0 or value == []:
        return None
    if isinstance(value, int):
        return (value, value)
    height, width = value
    return (int(height), int(width))


def training_image_shape(cfg: ExperimentConfig) -> tuple:
    """(H, W, 1) of the images the model trains on: the crop if set, else the tile.

    Conv models are built size-agnostic, (None, None, 1), so a model trained on crops encodes
    whole tiles; dense models are tied to the training size.
    """
    if cfg.model.builds_any_size:
        return (None, None, 1)
    side = _side_pair(getattr(cfg.data, "crop", None)) or _side_pair(getattr(cfg.data, "tile", None))
    if side is None:
        raise ValueError(f"a {cfg.model.kind} model needs a fixed image size: set data.crop or data.tile")
    return (*side, 1)
