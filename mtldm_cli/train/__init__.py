"""Training: the VAE on per-stem log-mels, the multi-track UNet on the frozen VAE's latents
(unconditional or CLAP-conditioned), optionally a vocoder on the log-mels (Vocos or HiFi-GAN, with
discriminators) and our own CLAP (contrastive, on captioned windows of the mix).

One config file (YAML or TOML, validated by pydantic: ``config.py``) describes the model and the run.
Stages (``stages.py``, one object each) write into one output folder that is a model folder in the
registry's layout the moment a stage has saved (``--model OUT`` loads it), plus ``training/`` with
the resumable state of each stage, a CSV log of the losses, an SVG plot of them (``logs.py``), and
what validation measured and sampled at each save (``validation.py``). The loop they share
(``loop.py``) runs on a CPU, one GPU, or many through ``accelerate launch``, and resumes exactly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from ..audio import check_dir, made_dir
from ..errors import NAME_ONLY, InputError, OutputError
from .config import ORDER, STAGES, TrainConfig, load_config, stage_frames
from .loop import StepBatches, Trainer
from .stages import ClapStage, MixClap, UNetStage, VAEStage, VocoderStage
from .validation import Validation

__all__ = ["ORDER", "STAGES", "MixClap", "StepBatches", "TrainConfig", "Trainer", "check_out", "load_config", "stage_runners",
           "train"]


def stage_runners(trainer: Trainer) -> dict:
    """Each stage's object, sharing one trainer and one validation."""
    validation = Validation(trainer)
    return {"vae": VAEStage(trainer, validation), "unet": UNetStage(trainer, validation),
            "vocoder": VocoderStage(trainer, validation), "clap": ClapStage(trainer, validation)}


def train(config: TrainConfig | os.PathLike, out: os.PathLike, *, stages=ORDER, resume: bool = True,
          force: bool = False, cpu: bool = False, progress: Optional[Callable[[dict], None]] = None) -> Path:
    """Train ``stages`` of ``config`` into ``out``; returns the model folder (loadable with ``--model``).

    A folder holding a run of the same config is resumed; anything else in ``out`` is an error unless
    ``force`` (or ``resume=False`` with ``force``: start over).
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError("{stages}: unknown stage", f"stages are: {', '.join(STAGES)}", stages=unknown[0])
    check_out(cfg, Path(out), resume=resume, force=force)
    trainers: dict[int, dict] = {}  # one trainer per window length (the UNet's may be its own)
    with made_dir(Path(out)):  # a run that fails before writing anything leaves no folder behind
        for stage in ORDER:
            if stage in stages:
                frames = stage_frames(cfg, stage)
                if frames not in trainers:
                    trainers[frames] = stage_runners(Trainer(cfg, out, cpu=cpu, progress=progress, frames=frames))
                trainers[frames][stage].run(resume=resume)
    return Path(out)


def check_out(cfg: TrainConfig, out: Path, *, resume: bool, force: bool) -> None:
    if not out.is_dir() or not any(out.iterdir()):
        check_dir(out)  # a file in its place, or above it, is an OutputError
        return
    saved = out / "training" / "config.json"
    if not saved.is_file():
        if not force:
            raise OutputError(f"{out}: exists and is not a training run", "choose another {out}, or pass {force}",
                              out=NAME_ONLY, force=True)
        return
    if not resume:
        if not force:
            raise OutputError(f"{out}: holds a training run", "drop {resume} to continue it, or pass {force} to start over",
                              resume=False, force=True)
        shutil.rmtree(out / "training")
        return
    try:
        same = TrainConfig.model_validate_json(saved.read_text()) == cfg
    except ValidationError:  # written by another version of mtldm
        same = False
    if not same and not force:
        raise OutputError(f"{out}: was trained with another config (see {saved})",
                          "use the same config to resume, another {out}, or {force}", out=NAME_ONLY, force=True)

