"""``mtldm generate``: total generation, from nothing or a text prompt."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import InputError
from .common import (BitDepthOpt, ChannelsOpt, CompileOpt, Device, DeviceOpt, DtypeOpt, DurationOpt, EtaOpt, FileFormat,
                     FloatOpt, ForceOpt, FormatOpt, GuidanceOpt, JobReport, JsonOpt, ModelOpt, OfflineOpt, OutOpt,
                     PlotOpt, Precision, PresetOpt, PromptOpt, QuietOpt, RevisionOpt, SampleRateOpt, SamplerOpt,
                     SeedOpt, StepsOpt, check_device, describe, file_format, finish, guarded, load_pipeline,
                     parse_seeds, precheck_outputs, progress_callback, sampling_flags, split_names)
from .manifest import read_manifest


@guarded
def generate(
    prompt: PromptOpt = None,
    stems: Annotated[Optional[list[str]], typer.Option(help="Stems to write, e.g. bass,drums (default: all).")] = None,
    out: OutOpt = Path("out"),
    model: ModelOpt = "demo",
    preset: PresetOpt = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    seed: SeedOpt = None,
    duration: DurationOpt = None,
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
    num: Annotated[Optional[int], typer.Option("--num", "-n", min=1, max=10000, help="Make N clips, seeds --seed, --seed+1, ..., each in OUT/seed-<seed>/.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Make one clip per seed (e.g. 1,5,9), each in OUT/seed-<seed>/.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="With --num/--seeds: clips through the model at once.")] = 4,
    manifest: Annotated[Optional[Path], typer.Option(help="A batch from a JSON Lines or CSV file: one clip a line with its own options (keys: name, prompt, seed, duration, steps, guidance, eta, sampler, preset; docs/usage.md).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="With --num/--seeds/--manifest: skip the clips already written (their run.json exists).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate every stem together, from noise or steered by a text PROMPT.

    Writes <stem>.wav per stem, mix.wav (their sum) and run.json (settings, seed, model) to --out. With --num or --seeds, many clips from one model load, batched through the model, each in its own OUT/seed-<seed>/ as soon as it is made (--json: one line per clip, then a summary).
    """
    from ..stems import select

    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
    names = split_names(stems)
    flags = sampling_flags(preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    many = parse_seeds(num, seeds, seed, resume and not manifest)
    if manifest and many is not None:
        raise InputError("--manifest and --num/--seeds: give one of them", "a manifest line may name its seed")
    listed = read_manifest(manifest, JOB_KEYS) if manifest else None
    check_device(device)
    summary = describe(model, prompt=prompt)
    if summary and many is None:  # refused before torch and the weights load
        precheck_outputs(out, select(names, summary.stems), force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out,
                         dtype=dtype, compile_unet=compile_unet)
    options = pipe.sampling_options("generate", **flags)
    kwargs: dict[str, Any] = dict(duration=duration, stems=names, output_rate=sample_rate, output_channels=channels)
    finishing: dict[str, Any] = dict(command="generate", force=force, file_format=fmt, json_out=json_out, quiet=quiet,
                                     started=started, plot=plot)
    if listed is not None:
        report = JobReport(out, listed, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda",
                           keys=True)

        def one(name: str, prompt: str | None = prompt, duration: float | None = duration, **own: Any) -> None:
            opts = pipe.sampling_options("generate", **(flags | own))
            precheck_outputs(out / name, select(names, pipe.stems), force, fmt[0])
            with progress_callback(f"generating {name}", quiet or json_out) as cb:
                result = pipe.generate(prompt, callback=cb, options=opts, **(kwargs | {"duration": duration}))
            finish(result, out / name, argv_info={"job": name}, job=name, emit=report.emit, **finishing)

        report.run_each(one, listed)
        return
    if many is not None:
        seed_list = many or list(range(options.seed, options.seed + (num or 1)))  # --num alone: from the drawn seed
        jobs = {f"seed-{s}": s for s in seed_list}
        report = JobReport(out, jobs, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda")
        for name in report.todo:
            precheck_outputs(out / name, select(names, pipe.stems), force, fmt[0])
        for group in report.groups(batch_size):
            with progress_callback(f"generating {report.progress(group)}", quiet or json_out) as cb:
                results = pipe.generate_batch([jobs[n] for n in group], prompt, batch_size=batch_size, options=options,
                                              callback=cb, **kwargs)
            for name, result in zip(group, results, strict=True):
                report.run(name, functools.partial(finish, result, out / name, argv_info={"job": name}, job=name,
                                                   emit=report.emit, **finishing))
        report.close()
        return
    precheck_outputs(out, select(names, pipe.stems), force, fmt[0])
    with progress_callback("generating", quiet or json_out) as cb:
        result = pipe.generate(prompt, callback=cb, options=options, **kwargs)
    finish(result, out, argv_info={}, **finishing)


JOB_KEYS = {"prompt", "seed", "duration", "steps", "guidance", "eta", "sampler", "preset"}
