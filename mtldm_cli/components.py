"""A model folder's components, read each by its own library (see docs/architecture.md, "On disk")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .audio import griffin_lim_vocoder
from .config import PIPELINE_FILE, PipelineConfig
from .errors import ModelError, first_problem


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' info logs and progress bars (ours are on stderr)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (transformers_logging, diffusers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


@dataclass
class Components:
    config: PipelineConfig
    vae: Any
    unet: Any
    vocoder: Any
    scheduler: Any
    clap: Any = None
    clap_processor: Any = None


def load_components(folder: str | os.PathLike) -> Components:
    """Every component of a model folder, frozen in eval mode; one ModelError if any is unreadable."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from safetensors import SafetensorError

    from .model import MultiTrackUNet

    quiet_libraries()
    folder = Path(folder)
    try:
        config = PipelineConfig.model_validate_json((folder / PIPELINE_FILE).read_text())
        parts = Components(
            config=config,
            vae=AutoencoderKL.from_pretrained(folder / "vae"),
            unet=MultiTrackUNet.from_pretrained(folder / "unet"),
            vocoder=load_vocoder(config, folder / "vocoder"),
            scheduler=DDIMScheduler.from_pretrained(folder / "scheduler"),
        )
        if config.conditioning == "clap":  # transformers' CLAP is imported only for a model that has one
            from transformers import ClapModel, ClapProcessor

            parts.clap = ClapModel.from_pretrained(folder / "clap")
            parts.clap_processor = ClapProcessor.from_pretrained(folder / "clap")
    except ValidationError as e:  # a config file that parses but says something impossible
        raise ModelError(f"{folder}: cannot load the model ({first_problem(e)})", "the folder is incomplete or corrupt") from None
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{folder}: cannot load the model ({reason})", "the folder is incomplete or corrupt") from None
    for m in (parts.vae, parts.unet, parts.vocoder, parts.clap):
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    return parts


def load_vocoder(config: PipelineConfig, folder: Path):
    """The vocoder pipeline.json names: Griffin-Lim (no weights), a HiFi-GAN or a Vocos."""
    if config.vocoder == "griffin-lim":
        return griffin_lim_vocoder(config.audio)
    if config.vocoder == "vocos":
        from .vocoders import VocosVocoder

        voc = VocosVocoder.read_config(folder)
        if voc.n_mels != config.audio.n_mels or voc.hop_length != config.audio.hop_length:
            raise ValueError(f"the vocoder takes {voc.n_mels} mels at hop {voc.hop_length}, "
                             f"the model makes {config.audio.n_mels} at hop {config.audio.hop_length}")
        return VocosVocoder.from_pretrained(folder)
    from transformers import SpeechT5HifiGan

    return SpeechT5HifiGan.from_pretrained(folder)
