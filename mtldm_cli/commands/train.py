"""``mtldm train``: train the VAE, the multi-track UNet and a vocoder from a config file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import emit_json, ForceOpt, JsonOpt, QuietOpt, err_console, guarded, progress_callback


@guarded
def train(
    config: Annotated[Path, typer.Argument(help="Training config (.yaml or .toml); see docs/training.md.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to train into (loads with --model OUT).")],
    stage: Annotated[Optional[list[str]], typer.Option(help="Stage(s) to run: clap, vae, unet, vocoder (default: every one the config sets, in that order).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue a run found in OUT from its last save.")] = True,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when a GPU is there.")] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model on stem folders: our CLAP on captioned mixes, the VAE on per-stem log-mels, the UNet on its latents, a vocoder.

    Runs on a CPU, a GPU, or many through `accelerate launch -m mtldm_cli train ...`. A killed run resumes from its last save with the same result as an uninterrupted one. Losses go to OUT/training/log.csv and loss.svg; validation (with data.validation) to validation.csv and samples/.
    """
    from ..train import ORDER as STAGES
    from ..train import train as run

    started = time.perf_counter()
    with progress_callback("training", quiet) as progress:
        folder = run(config, out, stages=tuple(stage or STAGES), resume=resume, force=force, cpu=cpu,
                     progress=progress)
    summary = {"ok": True, "out": str(folder), "stages": list(stage or STAGES),
               "total_s": round(time.perf_counter() - started, 3)}
    if json_out:
        emit_json(summary)
    elif not quiet:
        err_console.print(f"trained {', '.join(stage or STAGES)} into {folder} in {summary['total_s']:.1f} s; "
                          f"losses in {folder / 'training' / 'log.csv'}", soft_wrap=True)
