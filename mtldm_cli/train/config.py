"""The training config (YAML or TOML, validated by pydantic): the model, the data and each stage."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import AudioConfig, SamplingDefaults
from ..errors import InputError, first_problem
from ..model import UNetConfig

STAGES = ("vae", "unet", "vocoder", "clap")  # a stage's index seeds its random streams
ORDER = ("clap", "vae", "unet", "vocoder")  # the order they run in: the UNet may take this run's CLAP


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
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    # This stage's forward and loss under bf16 autocast (weights, optimizer, EMA and the saved model
    # stay float32); the run's mixed_precision, when set, applies to every stage.
    mixed_precision: Literal["no", "bf16"] = "no"


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
    # The UNet's own training windows (default: data.window_frames): long enough to hold several
    # bars (the paper trains on the whole 10.24 s segment) while the VAE learns from short ones.
    window_frames: Optional[int] = Field(None, ge=8)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # A folder with a transformers CLAP (ClapModel + ClapProcessor), e.g. a model folder's clap/:
    # the UNet is then conditioned on the CLAP audio embedding of each window's mix, replaced by the
    # null embedding (CLAP of the empty text) for a null_fraction of the items, for guidance.
    clap: Optional[Path] = None
    null_fraction: float = Field(0.1, ge=0, le=1)
    # With unet.unet.arrangement: the share of items that are given some stems (a random non-empty
    # proper subset, each of the 2^S - 2 alike; the rest generate every stem), and the share whose
    # first frames (up to half the window) are known for every stem, as a window's overlap is.
    given_fraction: float = Field(0.8, ge=0, le=1)
    prefix_fraction: float = Field(0.2, ge=0, le=1)
    # Encode every training window that starts on a grid of this many mel frames once, before the
    # first step (training/latents/), and train from that cache: the frozen VAE's (and CLAP's) cost
    # leaves the step. Unset: each batch is encoded as it comes, at any shift.
    cache_stride_frames: Optional[int] = Field(None, ge=1)


class VocoderTrain(Optim):
    """A vocoder on ground-truth log-mels: a Vocos (ConvNeXt + inverse STFT) or a HiFi-GAN generator
    (transformers' SpeechT5HifiGan). Loss: ``mrstft_weight`` x multi-resolution STFT + ``mel_weight`` x
    log-mel L1, and,
    from ``adversarial_start`` on, the GAN terms (least squares + feature matching) of the named
    ``discriminators``: HiFi-GAN's multi-period ("mpd"), Vocos' multi-resolution ("mrd").

    kind: griffin-lim (no stage), hifigan or vocos. ``fallback``: keep Griffin-Lim unless the trained
    vocoder beats it on the validation split's MR-STFT distance.
    """

    kind: Literal["griffin-lim", "hifigan", "vocos"] = "griffin-lim"
    fallback: bool = False
    steps: int = Field(2000, ge=1)
    lr: float = Field(2e-4, gt=0)
    window_frames: int = Field(32, ge=4)
    mel_weight: float = Field(1.0, ge=0)
    mrstft_weight: float = Field(1.0, ge=0)  # the term that sees the loud bins' spectral convergence
    phase_weight: float = Field(0.0, ge=0)  # vocos: APNet's anti-wrapped phase losses on the head's STFT
    phase: Literal["absolute", "integrated"] = "absolute"  # vocos: its head's phase (vocoders.py says why)
    magnitude: Literal["learned", "mel-prior"] = "learned"  # vocos: its head's magnitude (vocoders.py says why)
    discriminators: tuple[Literal["mpd", "mrd"], ...] = ()
    mrd_fft_sizes: tuple[int, ...] = (1024, 512, 256)
    adversarial_start: int = Field(0, ge=0)
    adversarial_weight: float = Field(1.0, ge=0)
    # vocos
    dim: int = Field(256, ge=8)
    intermediate_dim: int = Field(768, ge=8)
    num_layers: int = Field(8, ge=1)
    # hifigan
    upsample_initial_channel: int = 64
    upsample_rates: tuple[int, ...] = (4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))


class ClapTrain(Optim):
    """Our own CLAP: transformers' ClapModel (an HTSAT audio encoder and a RoBERTa text encoder, both
    small) trained contrastively on each window's mix and a caption of it (``data/captions.py``),
    with a byte-level BPE tokenizer built from the caption vocabulary."""

    steps: int = Field(3000, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(5e-4, gt=0)
    seconds: int = Field(10, ge=1)  # the clip the audio encoder sees (whole seconds: ClapFeatureExtractor's max_length_s)
    hop_length: int = Field(640, ge=1)  # the CLAP feature extractor's own front end, at audio.sample_rate
    n_mels: int = Field(64, ge=8)
    projection_dim: int = Field(128, ge=8)
    spec_size: int = Field(128, ge=16)
    patch_size: int = Field(4, ge=1)
    window_size: int = Field(8, ge=1)
    audio_hidden: int = Field(64, ge=8)
    audio_depths: tuple[int, ...] = (1, 1, 1)
    audio_heads: tuple[int, ...] = (2, 4, 8)
    text_hidden: int = Field(128, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    vocab_size: int = Field(1000, ge=300)
    max_tokens: int = Field(64, ge=8)


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
    clap: Optional[ClapTrain] = None  # set: train our own CLAP, and condition the UNet on it
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _frames_fit(self):
        vae = 2 ** (len(self.vae.block_out_channels) - 1)
        step = vae * self.unet.unet.downsample_factor
        unet_window = ("unet.window_frames", self.unet.window_frames) if self.unet.window_frames else ("data.window_frames", self.data.window_frames)
        for name, frames in (("audio.segment_frames", self.audio.segment_frames), unet_window):
            if frames is not None and frames % step:
                raise ValueError(f"{name} ({frames}) must be a multiple of {step} (VAE x UNet downsampling)")
        stride = self.unet.cache_stride_frames
        if stride is not None and stride % vae:
            raise ValueError(f"unet.cache_stride_frames ({stride}) must be a multiple of {vae} (VAE downsampling)")
        if self.data.window_frames is not None and self.data.window_frames % vae:
            raise ValueError(f"data.window_frames ({self.data.window_frames}) must be a multiple of {vae} (VAE downsampling)")
        if self.vocoder.phase_weight and self.vocoder.kind != "vocos":
            raise ValueError("vocoder.phase_weight needs vocoder.kind vocos (it supervises the STFT its head inverts)")
        if self.vocoder.phase != "absolute" and self.vocoder.kind != "vocos":
            raise ValueError("vocoder.phase integrated needs vocoder.kind vocos (it is a Vocos head)")
        if self.vocoder.magnitude != "learned" and self.vocoder.kind != "vocos":
            raise ValueError("vocoder.magnitude mel-prior needs vocoder.kind vocos (it is a Vocos head)")
        if self.vocoder.kind == "hifigan" and math.prod(self.vocoder.upsample_rates) != self.audio.hop_length:
            raise ValueError(f"vocoder.upsample_rates multiply to {math.prod(self.vocoder.upsample_rates)}, "
                             f"not audio.hop_length ({self.audio.hop_length})")
        conditioned = self.unet.clap is not None or self.clap is not None
        if (self.unet.unet.cond_dim is None) == conditioned:
            raise ValueError("unet.unet.cond_dim goes with a CLAP (unet.clap, or this run's clap stage): set both "
                             "(CLAP-conditioned) or neither")
        if self.unet.clap is None and self.clap is not None and self.unet.unet.cond_dim != self.clap.projection_dim:
            raise ValueError(f"unet.unet.cond_dim ({self.unet.unet.cond_dim}) must be clap.projection_dim "
                             f"({self.clap.projection_dim})")
        c = self.clap
        if c is not None:
            if len(c.audio_depths) != len(c.audio_heads):
                raise ValueError("clap.audio_depths and clap.audio_heads differ in length")
            grid = c.spec_size // c.patch_size
            if c.spec_size % c.n_mels or grid % (c.window_size * 2 ** (len(c.audio_depths) - 1)):
                raise ValueError("clap.spec_size must be a multiple of clap.n_mels, and spec_size / patch_size of "
                                 "window_size x 2^(stages - 1)")
            frames, fits = int(c.seconds * self.audio.sample_rate) // c.hop_length + 1, c.spec_size * (c.spec_size // c.n_mels)
            if frames > fits:
                raise ValueError(f"clap: {c.seconds} s at hop {c.hop_length} is {frames} frames; the audio encoder "
                                 f"takes at most spec_size x spec_size / n_mels = {fits} (raise clap.hop_length)")
        if len(self.vocoder.resblock_kernel_sizes) != len(self.vocoder.resblock_dilation_sizes):
            raise ValueError("vocoder.resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        return self


def stage_frames(cfg: TrainConfig, stage: Optional[str] = None) -> int:
    """The mel frames of one training window of ``stage`` (default: the windows the stages share)."""
    own = cfg.unet.window_frames if stage == "unet" else None
    return own or cfg.data.window_frames or cfg.audio.segment_frames


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
        raise InputError(f"{path}: {first_problem(e)}", f"{e.error_count()} problem(s); see docs/training.md") from None
    base = path.parent
    data = cfg.data.model_copy(update={k: (base / v if v is not None and not Path(v).is_absolute() else v)
                                       for k, v in (("train", cfg.data.train), ("validation", cfg.data.validation))})
    return cfg.model_copy(update={"data": data})

