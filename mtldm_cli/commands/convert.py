"""``mtldm convert``: the authors' MT-MusicLDM release -> an mtldm model folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import emit_json, ForceOpt, JsonOpt, QuietOpt, err_console, guarded, note

FileOpt = Optional[Path]


@guarded
def convert(
    src: Annotated[Path, typer.Argument(help="The release .tar.gz, its Lightning .ckpt, or a folder holding them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the converted model to.")],
    name: Annotated[Optional[str], typer.Option(help="Model name recorded in pipeline.json.")] = None,
    vae: Annotated[FileOpt, typer.Option(help="vae-ckpt.ckpt, if the Lightning file lacks the VAE.")] = None,
    vocoder: Annotated[FileOpt, typer.Option(help="hifigan-ckpt.ckpt, if the Lightning file lacks the vocoder.")] = None,
    clap: Annotated[FileOpt, typer.Option(help="clap-ckpt.pt, if the Lightning file lacks CLAP.")] = None,
    tokenizer: Annotated[str, typer.Option(help="CLAP's RoBERTa tokenizer: hub id[@revision] or a local folder.")] = "FacebookAI/roberta-base",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA UNet weights (what the authors sample with).")] = True,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow checkpoints holding Python objects (runs their code; only for files you trust).")] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert official MT-MusicLDM checkpoints (Zenodo 13947715 / 10643148) to our layout.

    Every checkpoint key is mapped or dropped for a stated reason (see convert.json in the output);
    anything unexpected is an error. The result loads with --model OUT and can be pushed to the hub.
    """
    from ..convert import convert as run

    started = time.perf_counter()
    report = run(src, out, name=name, vae=vae, vocoder=vocoder, clap=clap, tokenizer=tokenizer, use_ema=ema,
                 trust_pickle=trust_pickle, force=force, progress=lambda m: note(m, quiet))
    summary = {"ok": True, "out": str(out), **report.as_dict(), "total_s": round(time.perf_counter() - started, 3)}
    if json_out:
        emit_json(summary)
    elif not quiet:
        mapped = ", ".join(f"{k} {v}" for k, v in report.mapped.items())
        err_console.print(f"wrote {out} (keys mapped: {mapped}; details in {out / 'convert.json'})", soft_wrap=True)
        for n in report.notes:
            err_console.print(f"[yellow]note:[/] {n}", soft_wrap=True)
