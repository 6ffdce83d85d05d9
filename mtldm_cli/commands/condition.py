"""``mtldm condition``: generation steered by a reference clip's CLAP audio embedding."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..audio import load_audio
from ..errors import InputError
from .manifest import read_manifest
from .common import (JobReport, check_device, PlotOpt, BitDepthOpt, ChannelsOpt, FileFormat, FormatOpt, SampleRateOpt, file_format, Device, DeviceOpt, DurationOpt, EtaOpt, FloatOpt, ForceOpt, GuidanceOpt, JsonOpt, ModelOpt,
                     OfflineOpt, OutOpt, PresetOpt, QuietOpt, RevisionOpt, SamplerOpt, SeedOpt, StepsOpt, finish,
                     check_sampling_flags, guarded, describe, load_pipeline, precheck_outputs, progress_callback, sampling_options)


@guarded
def condition(
    ref: Annotated[Optional[Path], typer.Option("--ref", "-r", help="Reference clip (any format soundfile reads).")] = None,
    out: OutOpt = Path("out"),
    model: ModelOpt = "mt-musicldm",
    preset: PresetOpt = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    seed: SeedOpt = None,
    duration: DurationOpt = None,
    device: DeviceOpt = Device.auto,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    force: ForceOpt = False,
    float_wav: FloatOpt = False,
    format: FormatOpt = FileFormat.wav,
    bit_depth: BitDepthOpt = None,
    sample_rate: SampleRateOpt = None,
    channels: ChannelsOpt = None,
    plot: PlotOpt = False,
    manifest: Annotated[Optional[Path], typer.Option(help="A batch from a JSON Lines or CSV file: one reference a line (keys: name, ref, seed, duration, steps, guidance, eta, sampler, preset; docs/usage.md).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="With --manifest: skip the jobs already written (their run.json exists).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate every stem in the style of a reference clip (its CLAP audio embedding)."""
    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
    if (ref is None) == (manifest is None) or (resume and not manifest):
        raise InputError("give --ref or a --manifest (one of them; --resume goes with --manifest)", "see mtldm condition --help")
    if manifest:
        jobs = read_manifest(manifest, JOB_KEYS)
        check_sampling_flags(sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
        check_device(device)
        describe(model, reference=True)
        pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
        flags = dict(preset=preset and preset.value, sampler=sampler and sampler.value, steps=steps, guidance=guidance,
                     eta=eta, seed=seed)

        def one(name: str, report: JobReport, ref: Path | None = None, duration: float | None = duration, **own: Any) -> None:
            if ref is None:
                raise InputError("the job gives no ref", "add 'ref' to its line")
            opts = pipe.sampling_options("condition", **(flags | own))
            with progress_callback(f"generating {name}", quiet or json_out) as cb:
                result = pipe.condition(load_audio(ref), duration=duration, callback=cb, options=opts,
                                        output_rate=sample_rate, output_channels=channels)
            finish(result, out / name, command="condition", argv_info={"job": name, "reference": str(ref)}, job=name,
                   emit=report.emit, force=force, file_format=fmt, json_out=json_out, quiet=quiet, started=started, plot=plot)

        report = JobReport(out, jobs, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda",
                           keys=True)
        for name in report.todo:
            report.run(name, functools.partial(one, name, report, **jobs[name]))
        report.close()
        return
    assert ref is not None
    reference = load_audio(ref)  # read once, before the model loads: a bad file fails at once
    check_sampling_flags(sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    check_device(device)
    summary = describe(model, reference=True)
    if summary:  # refused before torch and the weights load
        precheck_outputs(out, list(summary.stems), force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
    options = sampling_options(pipe, "condition", preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    precheck_outputs(out, list(pipe.stems), force, fmt[0])
    with progress_callback("generating", quiet or json_out) as cb:
        result = pipe.condition(reference, duration=duration, callback=cb, options=options,
                                output_rate=sample_rate, output_channels=channels)
    finish(result, out, command="condition", argv_info={"reference": str(ref)}, force=force,
           file_format=fmt, json_out=json_out, quiet=quiet, started=started, plot=plot)


JOB_KEYS = {"ref", "seed", "duration", "steps", "guidance", "eta", "sampler", "preset"}
