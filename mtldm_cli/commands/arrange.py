"""``mtldm arrange``: given some stems, generate the missing ones."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import InputError
from .common import (BitDepthOpt, ChannelsOpt, CompileOpt, Device, DeviceOpt, DtypeOpt, EtaOpt, FileFormat, FloatOpt,
                     ForceOpt, FormatOpt, GuidanceOpt, JobReport, JsonOpt, ModelOpt, OfflineOpt, OutOpt, PlotOpt,
                     Precision, PresetOpt, PromptOpt, QuietOpt, RevisionOpt, SampleRateOpt, SamplerName, SeedOpt,
                     StepsOpt, check_device, describe, file_format, finish, guarded, load_pipeline, note,
                     precheck_outputs, progress_callback, sampling_flags, split_names)
from .manifest import read_manifest, required


def _split(item: str) -> tuple[str | None, str]:
    """``bass=take3.wav`` names its stem; ``bass.wav`` leaves it to the file name."""
    name, sep, path = item.partition("=")
    return (name.strip().lower(), path) if sep else (None, item)


@guarded
def arrange(
    files: Annotated[Optional[list[str]], typer.Argument(help="More given stems, as with --given.", show_default=False)] = None,
    given: Annotated[Optional[list[str]], typer.Option("--given", "-g", help="Given stem: bass.wav (stem from the file name) or bass=path.wav. Repeat, or list files after it.")] = None,
    want: Annotated[Optional[list[str]], typer.Option("--want", "-w", help="Stems to generate: --want guitar piano or --want guitar,piano (default: every stem not given).")] = None,
    prompt: PromptOpt = None,
    out: OutOpt = Path("out"),
    model: ModelOpt = "demo",
    preset: PresetOpt = None,
    sampler: Annotated[Optional[SamplerName], typer.Option(help="Sampler, overriding the preset's (default: the model's arrangement sampler: ddim for demo).")] = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    resample: Annotated[Optional[int], typer.Option(min=1, max=20, help="RePaint: make each step N times, re-noising in between, so the new stems settle to the given ones (ddim only; default: the model's when sampling with ddim, 4 for demo).")] = None,
    reconstruction: Annotated[Optional[float], typer.Option(min=0.0, help="Reconstruction guidance weight: pull the new stems by the gradient of the given stems' reconstruction error (a backward pass a step; default: the model's).")] = None,
    given_guidance: Annotated[Optional[float], typer.Option(min=0.0, max=20.0, help="Guidance by the given stems: above 1 the new stems answer them more and the seed less (an extra pass a step; arrangement-trained models only, as demo; default: the model's).")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.auto,
    dtype: DtypeOpt = Precision.fp32,
    compile_unet: CompileOpt = False,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    force: ForceOpt = False,
    float_wav: FloatOpt = False,
    format: FormatOpt = FileFormat.wav,
    bit_depth: BitDepthOpt = None,
    sample_rate: SampleRateOpt = None,
    channels: ChannelsOpt = None,
    plot: PlotOpt = False,
    manifest: Annotated[Optional[Path], typer.Option(help="A batch from a JSON Lines or CSV file: one arrangement a line (keys: name, given, want, prompt, seed, steps, guidance, ...; docs/usage.md).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="With --manifest: skip the jobs already written (their run.json exists).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate the stems you want to fit the stems you give.

    Example: mtldm arrange --given "01 Bass.wav" drums.wav --want guitar piano --out song/

    Stems are told by their file names (01 Bass.wav, Song_Keys.wav, gtr.wav; or name one: bass=take3.wav). The result is at the given stems' sample rate, channels and bit depth, as long as they are, and the given stems come back unchanged. The new stems are conditioned on the given stems' mix, or on --prompt.
    """
    from ..audio import audio_name, load_audio
    from ..stems import canonical, check_arrangement, name_given

    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
    flags = sampling_flags(preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed,
                           resample=resample, reconstruction=reconstruction, given_guidance=given_guidance)
    if manifest or resume:
        if not manifest or given or files:
            raise InputError("--manifest: give the stems there, or on the command line without it", "one of them")
        _arrange_many(read_manifest(manifest, JOB_KEYS), flags, prompt=prompt, want=split_names(want), out=out, model=model,
                      device=device, loading=dict(revision=revision, offline=offline, quiet=quiet or json_out, dtype=dtype,
                                                  compile_unet=compile_unet), resume=resume, json_out=json_out, quiet=quiet,
                      finishing=dict(command="arrange", force=force, file_format=fmt, json_out=json_out, quiet=quiet,
                                     started=started, plot=plot), output=dict(output_rate=sample_rate, output_channels=channels))
        return
    items = [_split(item) for item in [*(given or []), *(files or [])]]
    # --want guitar piano leaves "piano" among the files: a word that names stems and no file is wanted
    bare = [p for stem, p in items if stem is None and re.fullmatch(r"[A-Za-z,]+", p) and not Path(p).exists()]
    audio = {p: load_audio(p) for _, p in items if p not in bare}  # read once, before the model loads
    check_device(device)
    summary = describe(model, prompt=prompt)

    def plan(stems):
        words = split_names(bare) or []
        for word in bare:
            if not all(w in stems for w in canonical(split_names([word]) or [word], stems)):
                load_audio(word)  # says: no such file
        wanted = None if want is None and not words else [*(split_names(want) or []), *words]
        entries: list[Any] = [(stem, audio[p]) if stem else audio[p] for stem, p in items if p not in bare]
        named = name_given(entries, stems)
        return (named, *check_arrangement(named, wanted, stems))

    if summary:  # refused before torch and the weights load
        _, given_names, want_names = plan(summary.stems)
        precheck_outputs(out, [*given_names, *want_names], force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out,
                         dtype=dtype, compile_unet=compile_unet)
    named, given_names, want_names = plan(pipe.stems)
    given_files = {s: audio_name(a, s) for s, a in named.items()}
    note("given: " + ", ".join(f"{s} = {f}" for s, f in given_files.items()), quiet or json_out)
    options = pipe.sampling_options("arrange", **flags)
    precheck_outputs(out, [*given_names, *want_names], force, fmt[0])
    with progress_callback("arranging", quiet or json_out) as cb:
        result = pipe.arrange(named, want_names, prompt=prompt, callback=cb, options=options,
                              output_rate=sample_rate, output_channels=channels)
    finish(result, out, command="arrange", argv_info={"given_files": given_files},
           force=force, file_format=fmt, json_out=json_out, quiet=quiet, started=started, plot=plot)


JOB_KEYS = {"given", "want", "prompt", "seed", "steps", "guidance", "eta", "sampler", "preset", "resample", "reconstruction",
            "given_guidance"}


def _arrange_many(jobs: dict[str, dict[str, Any]], flags: dict[str, Any], *, prompt: str | None, want: list[str] | None,
                  out: Path, model: str, device: Device, loading: dict[str, Any], resume: bool, json_out: bool,
                  quiet: bool, finishing: dict[str, Any], output: dict[str, Any]) -> None:
    """A manifest's arrangements from one model load (``loading``: :func:`load_pipeline`'s keywords),
    each into ``out/<name>/`` (its own options over the flags)."""
    check_device(device)
    describe(model, prompt=prompt)
    pipe = load_pipeline(model, device, **loading)

    report = JobReport(out, jobs, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda",
                       keys=True)

    def one(name: str, given: Any = None, want: list[str] | None = want, prompt: str | None = prompt, **own: Any) -> None:
        opts = pipe.sampling_options("arrange", **(flags | own))
        with progress_callback(f"arranging {name}", quiet or json_out) as cb:
            result = pipe.arrange(required(given, "given"), want, prompt=prompt, callback=cb, options=opts, **output)
        finish(result, out / name, argv_info={"job": name}, job=name, emit=report.emit, **finishing)

    report.run_each(one, jobs)
