"""The training config (YAML or TOML, validated by pydantic): the model, the data and each stage."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import AudioConfig, SamplingDefaults
from ..errors import InputError
from ..model import UNetConfig

STAGES = ("vae", "unet", "vocoder")  # run in this order; a stage's index seeds its random streams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train: Path
    validation: Optional[Path] = None
    layout: Literal["auto", "stems", "slakh"] = "auto"
    stem_map: dict[str, list[str]] = Field(default_factory=dict)
    num_workers: int = 0
    # Training windows may be shorter than the model's segment (the UNet is convolutional, and
    # attends over whatever length it is given): cheaper steps for a CPU-trained model.
    window_frames: Optional[int] = Field(None, ge=8)


class Optim(_Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    grad_clip: float = 1.0


class VAETrain(Optim):
    """AudioLDM's VAE objective without its perceptual and adversarial terms: L1 + KL."""

    latent_channels: int = 8
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    kl_weight: float = 1e-6


class UNetTrain(Optim):
    unet: UNetConfig = Field(default_factory=lambda: UNetConfig(cond_dim=None))
    lr: float = Field(3e-5, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # A folder with a transformers CLAP (ClapModel + ClapProcessor), e.g. a model folder's clap/:
    # the UNet is then conditioned on the CLAP audio embedding of each window's mix, replaced by the
    # null embedding (CLAP of the empty text) for a null_fraction of the items, for guidance.
    clap: Optional[Path] = None
    null_fraction: float = Field(0.1, ge=0, le=1)


class VocoderTrain(Optim):
    """A HiFi-GAN generator (transformers' SpeechT5HifiGan) on ground-truth log-mels, trained with a
    multi-resolution STFT + log-mel L1 loss and no discriminator (a CPU-sized recipe).

    kind: griffin-lim (no stage), hifigan (train and use it), or auto (train it, and keep it only if
    it beats Griffin-Lim on the validation split's multi-resolution STFT distance).
    """

    kind: Literal["griffin-lim", "hifigan", "auto"] = "griffin-lim"
    steps: int = Field(2000, ge=1)
    lr: float = Field(2e-4, gt=0)
    window_frames: int = Field(32, ge=4)
    upsample_initial_channel: int = 64
    upsample_rates: tuple[int, ...] = (4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    mel_weight: float = 1.0


class ValidationConfig(_Strict):
    """What each save measures on data.validation (skipped when that is not set)."""

    items: int = Field(8, ge=1)  # windows, spread over the split
    samples: int = Field(1, ge=0)  # clips the UNet stage samples (EMA weights) into training/samples/
    sample_steps: int = Field(25, ge=1)


class TrainConfig(_Strict):
    name: str
    description: str = ""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    data: DataConfig
    vae: VAETrain = Field(default_factory=VAETrain)
    unet: UNetTrain = Field(default_factory=UNetTrain)
    vocoder: VocoderTrain = Field(default_factory=VocoderTrain)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _frames_fit(self):
        step = 2 ** (len(self.vae.block_out_channels) - 1) * self.unet.unet.downsample_factor
        for name, frames in (("audio.segment_frames", self.audio.segment_frames), ("data.window_frames", self.data.window_frames)):
            if frames is not None and frames % step:
                raise ValueError(f"{name} ({frames}) must be a multiple of {step} (VAE x UNet downsampling)")
        if self.vocoder.kind != "griffin-lim" and math.prod(self.vocoder.upsample_rates) != self.audio.hop_length:
            raise ValueError(f"vocoder.upsample_rates multiply to {math.prod(self.vocoder.upsample_rates)}, "
                             f"not audio.hop_length ({self.audio.hop_length})")
        if (self.unet.unet.cond_dim is None) != (self.unet.clap is None):
            raise ValueError("unet.unet.cond_dim and unet.clap go together: set both (CLAP-conditioned) or neither")
        if len(self.vocoder.resblock_kernel_sizes) != len(self.vocoder.resblock_dilation_sizes):
            raise ValueError("vocoder.resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        return self


def load_config(path: os.PathLike) -> TrainConfig:
    """Read a YAML or TOML training config; any mistake is one line that names the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file", "give a .yaml or .toml training config")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            raw = tomllib.loads(path.read_text())
        else:
            import yaml

            raw = yaml.safe_load(path.read_text())
    except Exception as e:  # yaml and tomllib raise their own error types
        raise InputError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'} "
                         f"({str(e).splitlines()[0]})", "fix the syntax") from None
    try:
        cfg = TrainConfig.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(f"{path}: {where}: {err['msg']}", f"{e.error_count()} problem(s); see docs/training.md") from None
    base = path.parent
    data = cfg.data.model_copy(update={k: (base / v if v is not None and not Path(v).is_absolute() else v)
                                       for k, v in (("train", cfg.data.train), ("validation", cfg.data.validation))})
    return cfg.model_copy(update={"data": data})

