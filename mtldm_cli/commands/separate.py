"""``mtldm separate``: a mixture into stems with MSDM's posterior samplers in latent space."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..audio import load_audio
from ..config import METHODS
from ..errors import InputError
from ..options import SeparationOptions
from .common import (BitDepthOpt, ChannelsOpt, CompileOpt, Device, DeviceOpt, DtypeOpt, FileFormat, FloatOpt, ForceOpt,
                     FormatOpt, JobReport, JsonOpt, ModelOpt, OfflineOpt, OutOpt, PlotOpt, Precision, QuietOpt,
                     RevisionOpt, SampleRateOpt, SeedOpt, StepsOpt, batch_inputs, check_device, describe, emit_json,
                     file_format, finish, guarded, load_pipeline, precheck_outputs, progress_callback)
from .manifest import read_manifest, required

Method = Enum("Method", {m: m for m in METHODS}, type=str)  # type: ignore[misc]
_D = SeparationOptions.default


@guarded
def separate(
    mixtures: Annotated[Optional[list[Path]], typer.Argument(help="The mixture to separate; several files or folders (their WAV/FLAC files) make a batch, each into OUT/<name>/.", show_default=False)] = None,
    method: Annotated[Method, typer.Option(help="dirac: pin one stem to the mixture constraint; gaussian: Gaussian likelihood of the mixture; consistency (ours): gaussian plus a mel-domain mixture-consistency gradient through the decoder.")] = Method(_D("method")),
    out: OutOpt = Path("out"),
    model: ModelOpt = "demo",
    steps: StepsOpt = None,
    churn: Annotated[Optional[float], typer.Option(min=0.0, help=f"MSDM's s_churn: noise re-injected per step (default: {_D('s_churn')}).")] = None,
    resamples: Annotated[Optional[int], typer.Option(min=1, help=f"Resampling passes per step (default: {_D('resamples')}).")] = None,
    sigma_max: Annotated[Optional[float], typer.Option(min=0.0, help=f"Largest noise level (maps to the last timestep) (default: {_D('sigma_max')}).")] = None,
    sigma_min: Annotated[Optional[float], typer.Option(min=0.0, help=f"Smallest noise level (default: {_D('sigma_min')}).")] = None,
    gamma: Annotated[Optional[float], typer.Option(min=0.0, help=f"gaussian: likelihood width as a multiple of sigma (default: {_D('gamma')}).")] = None,
    consistency: Annotated[Optional[float], typer.Option(min=0.0, help=f"consistency: strength of the mel-domain mixture-consistency gradient (default: {_D('consistency')}).")] = None,
    chunk_batch: Annotated[Optional[int], typer.Option(min=1, max=64, help=f"Chunks of a long mixture sampled at once, as one batch: faster, more memory (default: {_D('chunk_batch')}).")] = None,
    wiener: Annotated[bool, typer.Option("--wiener/--no-wiener", help="Soft-mask the mixture's STFT with the estimates: outputs keep its phase and sum to it (--no-wiener: the decoded stems as they are).")] = _D("wiener"),
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
    manifest: Annotated[Optional[Path], typer.Option(help="A batch from a JSON Lines or CSV file: one job a line, its mixture and its own options (keys: name, mixture, method, steps, s_churn, resamples, gamma, ...; docs/usage.md).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="In a batch: skip the mixtures already separated (their run.json exists).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Separate MIXTURES into one WAV per stem (mix.wav is the sum of the estimates).

    One mixture writes to --out; several (files, folders, a shell glob) are one batch with one model load, each into OUT/<name>/; a bad file gets its one-line error and the batch goes on (--json: one line per mixture, then a summary).

    Latent-space separation is approximate: the latent of a sum is not the sum of latents. Measured methods and limits: docs/separation.md.
    """
    started = time.perf_counter()
    fmt = file_format(format, bit_depth, float_wav)
    if bool(mixtures) == bool(manifest):
        raise InputError("give the mixtures or a --manifest (one of them)", "see mtldm separate --help")
    jobs = read_manifest(manifest, JOB_KEYS) if manifest else {n: {"mixture": p} for n, p in batch_inputs(mixtures or []).items()}
    if not jobs:
        raise InputError(f"{', '.join(map(str, mixtures or []))}: no WAV or FLAC files there", "give mixtures or folders holding them")
    single = bool(mixtures) and len(jobs) == 1 and not resume and not (mixtures or [Path()])[0].is_dir()
    if single:
        mix = load_audio(jobs.pop(next(iter(jobs)))["mixture"])  # read once, before the model loads: a bad file fails at once
    flags = dict(method=method.value, steps=steps, s_churn=churn, resamples=resamples, sigma_max=sigma_max,
                 sigma_min=sigma_min, gamma=gamma, consistency=consistency, wiener=wiener, chunk_batch=chunk_batch, seed=seed)
    SeparationOptions.check_given(**flags)
    check_device(device)
    summary = describe(model)
    if summary and single:  # refused before torch and the weights load
        precheck_outputs(out, list(summary.stems), force, fmt[0])
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out,
                         dtype=dtype, compile_unet=compile_unet)
    options = pipe.separation_options(**flags)
    finishing: dict[str, Any] = dict(command="separate", force=force, file_format=fmt, json_out=json_out, quiet=quiet,
                                     started=started, plot=plot)

    def one(folder: Path, job: str | None = None, emit: Callable[[dict], None] = emit_json, mixture: Path | None = None,
            **own: Any) -> None:
        """One mixture; a job's ``own`` options over the command line's."""
        audio = mix if mixture is None else load_audio(mixture)
        opts = pipe.separation_options(**(flags | own)) if own else options
        precheck_outputs(folder, list(pipe.stems), force, fmt[0])
        label = f"separating {job} ({opts.method})" if job else f"separating ({opts.method})"
        with progress_callback(label, quiet or json_out) as cb:
            result = pipe.separate(audio, options=opts, callback=cb, output_rate=sample_rate, output_channels=channels)
        finish(result, folder, argv_info={"mixture": str(mixture)} if job else {}, job=job, emit=emit, **finishing)

    if single:
        one(out)
        return
    report = JobReport(out, jobs, resume=resume, json_out=json_out, quiet=quiet, on_gpu=pipe.device.type == "cuda",
                       keys=manifest is not None)
    report.run_each(lambda name, mixture=None, **own: one(out / name, name, report.emit, required(mixture, "mixture"), **own),
                    jobs)


JOB_KEYS = {"mixture", "method", "steps", "s_churn", "resamples", "sigma_max", "sigma_min", "gamma", "consistency", "wiener",
            "chunk_batch", "seed"}

