"""``mtldm condition``: generation steered by a reference clip's CLAP audio embedding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..audio import load_audio
from ..errors import InputError
from .common import (BitDepthOpt, ChannelsOpt, CompileOpt, Device, DeviceOpt, DtypeOpt, DurationOpt, EtaOpt, FileFormat,
                     FloatOpt, ForceOpt, FormatOpt, GuidanceOpt, JobReport, JsonOpt, ModelOpt, OfflineOpt, OutOpt,
                     PlotOpt, Precision, PresetOpt, QuietOpt, RevisionOpt, SampleRateOpt, SamplerOpt, SeedOpt, StepsOpt,
                     check_device, describe, file_format, finish, guarded, load_pipeline, precheck_outputs,
                     progress_callback, sampling_flags)
from .manifest import read_manifest, required


@guarded
def condition(
    ref: Annotated[Optional[Path], typer.Option("--ref", "-r", help="Reference clip (any format soundfile reads).")] = None,
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
    flags = sampling_flags(preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    if manifest:
        jobs = read_manifest(manifest, JOB_KEYS)
        check_device(device)
        describe(model, reference=True)
        pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out,
                             dtype=dtype, compile_unet=compile_unet)
        report = JobReport(out, jobs, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda",
                           keys=True)

        def one(name: str, ref: Path | None = None, duration: float | None = duration, **own: Any) -> None:
            reference = load_audio(required(ref, "ref"))
            opts = pipe.sampling_options("condition", **(flags | own))
            with progress_callback(f"generating {name}", quiet or json_out) as cb:
                result = pipe.condition(reference, duration=duration, callback=cb, options=opts,
                                        output_rate=sample_rate, output_channels=channels)
            finish(result, out / name, command="condition", argv_info={"job": name, "reference": str(ref)}, job=name,
                   emit=report.emit, force=force, file_format=fmt, json_out=json_out, quiet=quiet, started=started, plot=plot)

        report.run_each(one, jobs)
        return
    assert ref is not None  # refused above when missing
    reference = load_audio(ref)  # read once, before the model loads: a bad file fails at once
    check_device(device)
    summary = describe(model, reference=True)
    if summary:  # refused before torch and the weights load
        precheck_outputs(out, list(summary.stems), force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out,
                         dtype=dtype, compile_unet=compile_unet)
    options = pipe.sampling_options("condition", **flags)
    precheck_outputs(out, list(pipe.stems), force, fmt[0])
    with progress_callback("generating", quiet or json_out) as cb:
        result = pipe.condition(reference, duration=duration, callback=cb, options=options,
                                output_rate=sample_rate, output_channels=channels)
    finish(result, out, command="condition", argv_info={"reference": str(ref)}, force=force,
           file_format=fmt, json_out=json_out, quiet=quiet, started=started, plot=plot)


JOB_KEYS = {"ref", "seed", "duration", "steps", "guidance", "eta", "sampler", "preset"}
