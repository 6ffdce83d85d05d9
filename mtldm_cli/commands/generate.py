"""``mtldm generate``: total generation, from nothing or a text prompt."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (check_device, PlotOpt, BitDepthOpt, ChannelsOpt, FileFormat, FormatOpt, SampleRateOpt, file_format, Device, DeviceOpt, DurationOpt, EtaOpt, FloatOpt, ForceOpt, GuidanceOpt, JsonOpt, ModelOpt,
                     OfflineOpt, OutOpt, PresetOpt, PromptOpt, QuietOpt, RevisionOpt, SamplerOpt, SeedOpt,
                     StepsOpt, finish, check_sampling_flags, guarded, describe, load_pipeline, precheck_outputs, progress_callback,
                     sampling_options, split_names)


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
    """Generate every stem together, from noise or steered by a text PROMPT.

    Writes <stem>.wav per stem, mix.wav (their sum) and run.json (settings, seed, model) to --out.
    """
    from ..stems import select

    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
    names = split_names(stems)
    check_sampling_flags(sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    check_device(device)
    summary = describe(model, prompt=prompt)
    if summary:  # refused before torch and the weights load
        precheck_outputs(out, select(names, summary.stems), force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
    options = sampling_options(pipe, "generate", preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed)
    precheck_outputs(out, select(names, pipe.stems), force, fmt[0])
    with progress_callback("generating", quiet or json_out) as cb:
        result = pipe.generate(prompt, duration=duration, stems=names, callback=cb, options=options,
                                output_rate=sample_rate, output_channels=channels)
    finish(result, out, command="generate", argv_info={}, force=force, file_format=fmt, json_out=json_out,
           quiet=quiet, started=started, plot=plot)
