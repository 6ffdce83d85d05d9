"""``mtldm condition``: generation steered by a reference clip's CLAP audio embedding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..audio import load_audio
from .common import (check_device, PlotOpt, BitDepthOpt, ChannelsOpt, FileFormat, FormatOpt, SampleRateOpt, file_format, Device, DeviceOpt, DurationOpt, EtaOpt, FloatOpt, ForceOpt, GuidanceOpt, JsonOpt, ModelOpt,
                     OfflineOpt, OutOpt, PresetOpt, QuietOpt, RevisionOpt, SamplerOpt, SeedOpt, StepsOpt, finish,
                     check_sampling_flags, guarded, describe, load_pipeline, precheck_outputs, progress_callback, sampling_options)


@guarded
def condition(
    ref: Annotated[Path, typer.Option("--ref", "-r", help="Reference clip (any format soundfile reads).")],
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
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate every stem in the style of a reference clip (its CLAP audio embedding)."""
    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
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
