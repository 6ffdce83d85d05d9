"""Configs saved beside the weights (pydantic): what a model expects of audio, and how it samples."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import NAME_ONLY, InputError
from .names import check_stem_names

DEFAULT_STEMS = ("bass", "drums", "guitar", "piano")
PIPELINE_FILE = "pipeline.json"  # the file that makes a folder a model folder
MAX_SECONDS = 600.0  # the longest result one call makes: an hour would run for hours and hold GBs of latents

Sampler = Literal["ddim", "dpm++"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
Method = Literal["dirac", "gaussian", "consistency"]  # separation methods
METHODS: tuple[str, ...] = get_args(Method)
Conditioning = Literal["none", "clap"]


def require_clap(model: str, conditioning: str | None, param: str) -> None:
    """Refuse ``param`` (a prompt, a reference) on a model without CLAP."""
    if conditioning == "none":
        raise InputError(f"model '{model}' is unconditional (no CLAP): it cannot use {{{param}}}",
                         "use a CLAP-conditioned model, or leave it out", **{param: NAME_ONLY})
Vocoder = Literal["hifigan", "vocos", "griffin-lim"]


class AudioConfig(BaseModel):
    """The audio front end. Defaults are MusicLDM's: 16 kHz mono, 64 slaney mels, hop 160."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(16000, gt=0, le=384000)
    segment_frames: int = Field(1024, gt=0)
    n_fft: int = Field(1024, gt=0)
    win_length: int = Field(1024, gt=0)
    hop_length: int = Field(160, gt=0)
    n_mels: int = Field(64, gt=0)
    f_min: float = Field(0.0, ge=0)
    f_max: float = Field(8000.0, gt=0, allow_inf_nan=False)
    log_clamp: float = Field(1e-5, gt=0)
    stems: tuple[str, ...] = DEFAULT_STEMS

    @field_validator("stems")
    @classmethod
    def _unique_stems(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2 or len(set(v)) != len(v) or "mix" in v:
            raise ValueError("stems must be at least two unique names, none of them 'mix'")
        check_stem_names(v)
        return v

    @model_validator(mode="after")
    def _frequencies(self):
        if not self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 (got f_min {self.f_min}, f_max {self.f_max}, "
                             f"sample_rate {self.sample_rate})")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        return self

    @property
    def segment_seconds(self) -> float:
        return self.segment_frames * self.hop_length / self.sample_rate


class SamplingDefaults(BaseModel):
    """A model's default sampling; every value can be overridden per call.

    The default is the fast preset (DPM-Solver++ 2M, chosen by measurement: docs/performance.md);
    ``PRESETS["paper"]`` is the authors' DDIM, 200 steps, eta 1. ``options.py`` resolves these with a
    preset and a call's overrides into the options one run uses.
    """

    model_config = ConfigDict(extra="forbid")

    sampler: Sampler = "dpm++"
    steps: int = 25
    eta: float = 1.0  # DDIM only
    guidance: float = 2.0
    arrange_guidance: float = 1.0
    arrange_sampler: Sampler | None = None  # an arrangement's sampler when not `sampler` (RePaint needs ddim)
    arrange_resample: int = 1  # RePaint: times each step of an arrangement is made (when it samples with ddim)
    arrange_reconstruction: float = 0.0  # reconstruction guidance weight of an arrangement
    arrange_given_guidance: float = 1.0  # guidance by the given stems (arrangement-trained UNets only)
    separate_steps: int = 150
    window_overlap_seconds: float = 2.56  # long audio: overlap between consecutive windows


PRESETS: dict[str, dict] = {
    "paper": {"sampler": "ddim", "steps": 200, "eta": 1.0},
    "fast": {"sampler": "dpm++", "steps": 25},
}
Preset = Literal["paper", "fast"]


class PipelineConfig(BaseModel):
    """``pipeline.json`` at the root of a model folder: ties the components together."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    name: str
    description: str = ""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    conditioning: Conditioning = "clap"
    vocoder: Vocoder = "hifigan"  # griffin-lim: no vocoder/ folder
    clap_sample_rate: int = 48000
    clap_max_seconds: float = 10.0
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
