"""``mtldm arrange``: given some stems, generate the missing ones."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import StemError
from .common import (Device, DeviceOpt, EtaOpt, FloatOpt, ForceOpt, GuidanceOpt, JsonOpt, ModelOpt, OfflineOpt,
                     OutOpt, PresetOpt, PromptOpt, QuietOpt, RevisionOpt, SamplerOpt, SeedOpt, StepsOpt, finish,
                     check_sampling_flags, guarded, load_pipeline, note, precheck_outputs, progress_callback, sampling_options,
                     split_names)


def _split(item: str) -> tuple[str | None, str]:
    """``bass=take3.wav`` names its stem; ``bass.wav`` leaves it to the file name."""
    name, sep, path = item.partition("=")
    return (name.strip().lower(), path) if sep else (None, item)


@guarded
def arrange(
    files: Annotated[Optional[list[str]], typer.Argument(help="More given stems, as with --given.", show_default=False)] = None,
    given: Annotated[Optional[list[str]], typer.Option("--given", "-g", help="Given stem: bass.wav (stem from the file name) or bass=path.wav. Repeat, or list files after it.")] = None,
    want: Annotated[Optional[list[str]], typer.Option("--want", "-w", help="Stems to generate, e.g. piano,guitar (default: every stem not given).")] = None,
    prompt: PromptOpt = None,
    out: OutOpt = Path("out"),
    model: ModelOpt = "demo",
    preset: PresetOpt = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    resample: Annotated[Optional[int], typer.Option(min=1, max=20, help="RePaint: make each step N times, re-noising in between, so the new stems settle to the given ones (ddim only; default: the model's).")] = None,
    reconstruction: Annotated[Optional[float], typer.Option(min=0.0, help="Reconstruction guidance weight: pull the new stems by the gradient of the given stems' reconstruction error (a backward pass a step; default: the model's).")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.auto,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    force: ForceOpt = False,
    float_wav: FloatOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate the stems you want to fit the stems you give.

    Example: mtldm arrange --given bass.wav drums.wav --want piano --out song/

    Given stems are copied to --out sample-exact (at the model's rate); the new stems are conditioned on the given stems' mix, or on --prompt.
    """
    from ..audio import audio_name, load_audio
    from ..stems import check_arrangement, name_given

    started = time.perf_counter()
    items = [_split(item) for item in [*(given or []), *(files or [])]]
    # a bare word after --given (--want piano guitar) may be a stem name, not a file: judged below
    bare = [p for stem, p in items if stem is None and re.fullmatch(r"[A-Za-z]+", p) and not Path(p).exists()]
    audio = {p: load_audio(p) for _, p in items if p not in bare}  # read once, before the model loads
    check_sampling_flags(sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed, resample=resample,
                         reconstruction=reconstruction)
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
    for word in bare:
        if word.lower() in pipe.stems:
            raise StemError(f"'{word}' is a stem name, not a file", "to want several stems write --want piano,guitar")
        load_audio(word)  # says: no such file
    entries: list[Any] = [(stem, audio[p]) if stem else audio[p] for stem, p in items]
    named = name_given(entries, pipe.stems)
    given_files = {s: audio_name(a, s) for s, a in named.items()}
    note("given: " + ", ".join(f"{s} = {f}" for s, f in given_files.items()), quiet or json_out)
    given_names, want_names = check_arrangement(named, split_names(want), pipe.stems)
    options = sampling_options(pipe, "arrange", preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed,
                               resample=resample, reconstruction=reconstruction)
    precheck_outputs(out, [*given_names, *want_names], force)
    with progress_callback("arranging", quiet or json_out) as cb:
        result = pipe.arrange(named, want_names, prompt=prompt, callback=cb, options=options)
    finish(result, out, command="arrange", argv_info={"given_files": given_files},
           force=force, float_wav=float_wav, json_out=json_out, quiet=quiet, started=started)
