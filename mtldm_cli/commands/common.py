"""Options, the error boundary, progress and output reporting shared by every subcommand."""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import contextmanager, nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..config import MAX_SECONDS, PRESETS, SAMPLERS
from ..errors import MtldmError

err_console = Console(stderr=True, highlight=False)
EXIT_INTERRUPTED = 130

# Library parameters whose option is not simply --name-with-dashes: errors name the parameter, and
# the boundary below spells it as the user typed it.
FLAGS = {"folder": "--out", "s_churn": "--churn", "reference": "--ref", "stages": "--stage", "use_ema": "--ema",
         "output_rate": "--sample-rate", "output_channels": "--channels", "subtype": "--bit-depth"}


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="MTLDM_MODEL",
                                       help="Registry name, local model folder or hub repo id.")]
RevisionOpt = Annotated[Optional[str], typer.Option(help="Hub revision (commit, tag, branch) to use instead of the registry's pin.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only cached models (also MTLDM_OFFLINE=1 or HF_HUB_OFFLINE=1).")]
DeviceOpt = Annotated[Device, typer.Option(help="Where to run.")]


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DtypeOpt = Annotated[Precision, typer.Option("--dtype", help="Precision of the UNet and VAE: bf16 and fp16 halve their memory and run faster on GPUs (bf16 also on CPUs with AVX-512 BF16 or AMX; fp16 on a CPU is slow). docs/performance.md.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet: the first step pays for compiling (a minute or more), the later ones run faster.")]
StepsOpt = Annotated[Optional[int], typer.Option(min=1, help="Sampler steps, overriding the preset's.")]
GuidanceOpt = Annotated[Optional[float], typer.Option(min=0.0, help="Classifier-free guidance scale (default: the model's).")]


Preset = Enum("Preset", {p: p for p in PRESETS}, type=str)  # type: ignore[misc]
SamplerName = Enum("SamplerName", {s: s for s in SAMPLERS}, type=str)  # type: ignore[misc]


PresetOpt = Annotated[Optional[Preset], typer.Option(help="paper: DDIM 200 steps, eta 1 (the authors'); fast: DPM-Solver++ 25 steps (default: the model's).")]
SamplerOpt = Annotated[Optional[SamplerName], typer.Option(help="Sampler, overriding the preset's.")]
EtaOpt = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="DDIM eta: 0 deterministic, 1 ancestral (default: the model's; ignored by dpm++).")]
SeedOpt = Annotated[Optional[int], typer.Option(min=0, help="Random seed; recorded in run.json when not given.")]
DurationOpt = Annotated[Optional[float], typer.Option(min=0.01, max=MAX_SECONDS, help=f"Seconds to generate, at most {MAX_SECONDS:.0f} (default: the model's 10.24 s segment; longer is done in overlapping windows).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder for <stem>.wav, mix.wav and run.json.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
FloatOpt = Annotated[bool, typer.Option("--float", help="Same as --bit-depth 32f.")]


class FileFormat(str, Enum):
    wav = "wav"
    flac = "flac"


class BitDepth(str, Enum):
    pcm16 = "16"
    pcm24 = "24"
    float = "32f"


SUBTYPE_OF = {BitDepth.pcm16: "pcm16", BitDepth.pcm24: "pcm24", BitDepth.float: "float"}
FormatOpt = Annotated[FileFormat, typer.Option("--format", help="Audio file format.")]
BitDepthOpt = Annotated[Optional[BitDepth], typer.Option("--bit-depth", help="Sample format: 16 or 24-bit PCM, or 32-bit float (WAV only) (default: the given stems' own, else 16).")]
SampleRateOpt = Annotated[Optional[int], typer.Option("--sample-rate", min=8000, max=192000, help="Output sample rate in Hz (default: the given stems', else the model's).")]
PlotOpt = Annotated[bool, typer.Option("--plot", help="Also write spectrograms.png: every stem and the mix on one time axis.")]
ChannelsOpt = Annotated[Optional[int], typer.Option("--channels", min=1, max=8, help="Output channels; mono stems are repeated over them (default: the given stems', else 1).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (errors too).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
PromptOpt = Annotated[Optional[str], typer.Option("--prompt", "-p", help="Text prompt (CLAP text embedding).")]


def sampling_flags(*, preset, sampler, steps, guidance, eta, seed, **arrangement) -> dict[str, Any]:
    """The generating commands' sampling flags under the library's names, each checked before the model
    loads (a seed of 2**63 or an infinite guidance is refused at once, not after minutes of loading);
    the model then resolves them into its options: ``pipe.sampling_options(task, **flags)``."""
    from ..options import SamplingOptions

    flags = dict(preset=preset and preset.value, sampler=sampler and sampler.value, steps=steps, guidance=guidance,
                 eta=eta, seed=seed, **arrangement)
    SamplingOptions.check_given(**flags)
    return flags


def guarded(fn: Callable) -> Callable:
    """The CLI's one error boundary: a library error becomes one stderr line and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("json_out"))
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except MtldmError as e:
            _fail(e.render(FLAGS), e.exit_code, as_json)
        except KeyboardInterrupt:
            _fail("interrupted; no partial output was written", EXIT_INTERRUPTED, as_json)
        except Exception as e:  # a bug: say so in one line, keep the traceback for MTLDM_DEBUG
            if os.environ.get("MTLDM_DEBUG"):
                traceback.print_exc()
            _fail(f"internal error: {type(e).__name__}: {e} (set MTLDM_DEBUG=1 for the traceback)", 1, as_json)

    return wrapper


JSON_SCHEMA = 1  # the version of every --json document (docs/usage.md, "Scripts and CI")


def emit_json(doc: dict) -> None:
    """The one JSON document a command with --json prints on stdout: ``ok``, ``schema``, then its fields."""
    typer.echo(json.dumps({"ok": doc.pop("ok", True), "schema": JSON_SCHEMA, **doc}, default=str))


def _fail(message: str, code: int, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": False, "error": message, "exit_code": code})
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def note(message: str, quiet: bool) -> None:
    if not quiet:
        err_console.print(f"[dim]{message}[/]", soft_wrap=True)


def split_names(values: list[str] | None) -> list[str] | None:
    """``["piano,guitar", "bass"]`` -> ``["piano", "guitar", "bass"]``."""
    if not values:
        return None
    return [n.strip().lower() for v in values for n in v.split(",") if n.strip()]


def check_device(device: Device) -> None:
    """Refuse a device this machine certainly lacks, before torch is imported (torch decides the rest)."""
    from ..devices import certainly_absent
    from ..errors import InputError

    reason = certainly_absent(device.value)
    if reason:
        raise InputError(f"{{device}}: {reason}", "use cpu or auto", device=device.value)


def describe(model: str, *, prompt: str | None = None, reference: bool = False):
    """What ``model`` is, from the registry or its folder, with the refusals that need nothing more:
    before torch is imported and anything is downloaded or loaded. None when only the model can tell
    (a hub repo id): the library refuses the same things after loading it."""
    from ..checkpoints import describe_model
    from ..config import require_clap

    summary = describe_model(model)
    if summary is not None:
        if prompt:
            require_clap(summary.name, summary.conditioning, "prompt")
        if reference:
            require_clap(summary.name, summary.conditioning, "reference")
    return summary


def one_of_many() -> bool:
    """Launched as one of several processes (``accelerate launch``, torchrun: ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class RankPrefixed(io.TextIOBase):
    """A text stream that starts each line with ``[rank R/W] ``, so that the stderr of several
    processes sharing one log can be told apart; everything else is the wrapped stream's."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self.at_line_start else "") + piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):  # type: ignore[override]
        return self.stream.encoding

    def fileno(self) -> int:
        return self.stream.fileno()


def prefix_stderr_by_rank() -> None:
    """Under ``accelerate launch`` or torchrun, every line this process writes on stderr names its
    rank (``RANK`` of ``WORLD_SIZE``)."""
    if one_of_many() and not isinstance(sys.stderr, RankPrefixed):
        sys.stderr = RankPrefixed(sys.stderr, f"[rank {os.environ.get('RANK', '?')}/{os.environ['WORLD_SIZE']}] ")


def process_state(on_gpu: bool):
    """accelerate's view of this process when it is :func:`one_of_many`, else None. Off the GPU the
    processes meet over gloo."""
    if not one_of_many():
        return None
    from accelerate import PartialState

    return PartialState(cpu=not on_gpu)


def load_pipeline(model: str, device: Device, *, revision=None, offline=False, quiet=False,
                  dtype: Precision = Precision.fp32, compile_unet: bool = False):
    from ..pipeline import MultiTrackPipeline

    where = device.value
    if one_of_many() and device == Device.auto:  # one GPU a process
        import torch

        where = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    # the process group starts only after this (JobReport): with one running, transformers' and
    # diffusers' save_pretrained write nothing on ranks but the first, and a model built, converted
    # or downloaded here by another rank would be left incomplete
    with err_console.status(f"loading {model}", spinner="dots") if not quiet else nullcontext():
        pipe = MultiTrackPipeline.from_pretrained(
            model, device=where, revision=revision, offline=offline or None,
            progress=lambda m: note(m, quiet), torch_dtype=dtype.value, compile=compile_unet,
        )
    if dtype == Precision.fp16 and pipe.device.type == "cpu" and not quiet:
        err_console.print("[yellow]warning:[/] fp16 on a CPU is emulated by most processors, many times slower "
                          "than fp32 (docs/performance.md); bf16 is the half precision CPUs run fast", soft_wrap=True)
    precision = "" if dtype == Precision.fp32 else f" in {dtype.value}"
    note(f"model {pipe.config.name} on {pipe.device}{precision}{', compiled' if compile_unet else ''}", quiet)
    return pipe


@contextmanager
def progress_callback(label: str, quiet: bool, *, every_s: float = 10.0):
    """Yield a callback for the library's progress reports: ``{"i", "total"}`` per step, ``{"stage"}``
    when a stage starts. On a terminal a rich bar, named by its stage; otherwise (a script, a CI log)
    plain timestamped lines, at most one every ``every_s`` seconds besides the stages and the end."""
    if quiet:
        yield None
        return
    if not err_console.is_terminal:
        yield _plain_progress(label, every_s)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def callback(info: dict) -> None:
            name = f"{label}: {info['stage']}" if "stage" in info else label
            if "i" in info:
                bar.update(task, completed=info["i"] + 1, total=info["total"], description=name)
            else:
                bar.update(task, description=name)

        yield callback


def _plain_progress(label: str, every_s: float) -> Callable[[dict], None]:
    started = last = time.monotonic()

    def say(text: str) -> None:
        err_console.print(f"[{time.strftime('%H:%M:%S')}] {label}: {text} ({time.monotonic() - started:.0f} s)",
                          soft_wrap=True, highlight=False, markup=False)

    def callback(info: dict) -> None:
        """A report with ``i`` is a step (of its ``stage``, when named); one with only ``stage`` starts one."""
        nonlocal last
        now = time.monotonic()
        stage = f"{info['stage']} " if "stage" in info else ""
        if "i" not in info:
            say(stage.strip())
        elif now - last >= every_s or info["i"] + 1 == info["total"] or info["i"] == 0:
            say(f"{stage}step {info['i'] + 1}/{info['total']}")
        else:
            return
        last = now

    return callback


def file_format(format: FileFormat, bit_depth: BitDepth | None, float_wav: bool) -> tuple[str, str | None]:
    """``--format``, ``--bit-depth`` and ``--float`` as the library's (format, subtype), checked before
    any work (subtype None: the given stems' own, else 16-bit)."""
    from ..audio import check_file_format
    from ..errors import InputError

    if float_wav and bit_depth not in (None, BitDepth.float):
        raise InputError("--float and {subtype}: they disagree", "give one of them", subtype=bit_depth.value)
    subtype = "float" if float_wav else SUBTYPE_OF[bit_depth] if bit_depth else None
    check_file_format(format.value, subtype or "pcm16")
    return format.value, subtype


def precheck_outputs(out: Path, names: list[str], force: bool, format: str = "wav") -> None:
    """Fail before any model work if outputs exist or the folder can't be written."""
    from ..audio import check_writable, output_paths

    check_writable(output_paths(out, names, format).values(), force=force)


def parse_seeds(num: int | None, seeds: str | None, seed: int | None, resume: bool) -> list[int] | None:
    """The seeds of a batch (``--num``/``--seeds``), None for one clip. ``--num`` without ``--seed`` is
    ``[]``: its seeds start from the one the options draw."""
    from ..errors import InputError
    from ..options import MAX_SEED

    if num is None and seeds is None:
        if resume:
            raise InputError("--resume: only for a batch", "give --num or --seeds")
        return None
    if num is not None and seeds is not None:
        raise InputError("--num and --seeds: give one of them", "--seeds names every seed itself")
    if seeds is None:
        return [] if seed is None else list(range(seed, seed + (num or 1)))
    if seed is not None:
        raise InputError("--seed and --seeds: give one of them", "list every seed in --seeds")
    try:
        values = [int(v) for v in seeds.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--seeds {seeds}: not a comma-separated list of whole numbers", "write e.g. --seeds 1,5,9") from None
    if not values or len(set(values)) != len(values) or not all(0 <= v <= MAX_SEED for v in values):
        raise InputError(f"--seeds {seeds}: give different seeds from 0 to {MAX_SEED}", "write e.g. --seeds 1,5,9")
    return values


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def batch_inputs(paths: list[Path]) -> dict[str, Path]:
    """Input files by job name: files as given, folders by their audio files (sorted). A job is named
    by its file's stem, with folders above it added (``song1_mix``) where stems repeat, as
    ``a/*/mix.wav`` gives; every name is one safe path component."""
    from ..names import safe_component

    files = [p for path in paths for p in (sorted(q for q in path.iterdir() if q.suffix.lower() in AUDIO_SUFFIXES)
                                          if path.is_dir() else [path])]
    names: dict[str, Path] = {}
    for depth in range(0, 8):
        names = {safe_component("_".join([*f.parent.parts[len(f.parent.parts) - depth:], f.stem]) if depth else f.stem, "input"): f
                 for f in files}
        if len(names) == len(files):
            return names
    return {f"{safe_component(f.stem, 'input')}-{k}": f for k, f in enumerate(files)}


class JobReport:
    """A batch's jobs, each writing into ``out/<name>/``: which are left (``resume`` skips those whose
    run.json exists), each one's outcome (a JSON line, or one line on stderr), a failed job's one-line
    error kept while the batch goes on, and at the end a summary and the exit code (0, or the first
    failure's). Launched as several processes (``accelerate launch``, torchrun), each takes its share
    of the jobs (accelerate's ``split_between_processes``) and the first prints one merged report."""

    def __init__(self, out: Path, jobs, *, resume: bool, json_out: bool, quiet: bool, on_gpu: bool = False,
                 keys: bool = False, done: str = "written"):
        """``keys``: the jobs come from a manifest, so an error names its key (``steps=0``), not a flag.
        ``done``: what a finished job was, in the summary (``written``; ``scored`` for evaluate)."""
        self.names = list(jobs)
        self.skipped = [n for n in self.names if resume and (out / n / "run.json").is_file()]
        self.todo = [n for n in self.names if n not in self.skipped]
        self.state = process_state(on_gpu)
        if self.state is not None:
            with self.state.split_between_processes(self.todo) as mine:
                self.todo = list(mine)
        self.failed: dict[str, int] = {}
        self.written: list[str] = []
        self.docs: list[dict] = []
        self.json_out, self.quiet, self.flags, self.done = json_out, quiet, None if keys else FLAGS, done
        if self.skipped:
            note(f"skipping {len(self.skipped)} finished job(s) (--resume)", quiet or json_out or not self.main)

    @property
    def main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def groups(self, size: int):
        for i in range(0, len(self.todo), size):
            yield self.todo[i:i + size]

    def progress(self, group: list[str]) -> str:
        first = self.todo.index(group[0]) + 1
        return f"{first}-{first + len(group) - 1} of {len(self.todo)}" if len(group) > 1 else f"{first} of {len(self.todo)}"

    def emit(self, doc: dict) -> None:
        """A job's JSON line: printed now, or, with several processes, by the first at the end."""
        if self.state is None:
            emit_json(doc)
        else:
            self.docs.append(doc)

    def run(self, name: str, job: Callable[[], None]) -> None:
        try:
            job()
            self.written.append(name)
        except MtldmError as e:
            self.failed[name] = e.exit_code
            message = e.render(self.flags)
            if self.json_out:
                self.emit({"ok": False, "job": name, "error": message, "exit_code": e.exit_code})
            err_console.print(f"[bold red]error:[/] {name}: {message}", soft_wrap=True)

    def run_each(self, job: Callable[..., None], args: Mapping[str, Mapping[str, Any]]) -> None:
        """``job(name, **args[name])`` for every job left to this process, then :meth:`close`."""
        for name in self.todo:
            self.run(name, functools.partial(job, name, **args[name]))
        self.close()

    def close(self, extra: dict | None = None) -> None:
        docs, written, failed = self.docs, self.written, self.failed
        if self.state is not None:
            from accelerate.utils import gather_object

            parts = gather_object([(self.docs, self.written, self.failed)])
            order = {n: i for i, n in enumerate(self.names)}
            docs = sorted((d for p in parts for d in p[0]), key=lambda d: order.get(d.get("job", ""), 0))
            written = [n for p in parts for n in p[1]]
            failed = {n: c for p in parts for n, c in p[2].items()}
            failed = {n: failed[n] for n in sorted(failed, key=order.__getitem__)}
        counts = {"jobs": len(self.names), self.done: len(written), "skipped": len(self.skipped), "failed": len(failed)}
        if self.main and self.json_out:
            for doc in docs:
                emit_json(doc)
            emit_json({"ok": not failed, "summary": counts, "failed": list(failed)} | (extra or {})
                      | ({"processes": self.state.num_processes} if self.state is not None else {}))
        elif self.main and not self.quiet:
            err_console.print(", ".join(f"{v} {k}" for k, v in counts.items()), soft_wrap=True)
        if failed:
            raise typer.Exit(next(iter(failed.values())))


def finish(output, out: Path, *, command: str, argv_info: dict, force: bool, file_format: tuple[str, str | None],
           json_out: bool, quiet: bool, started: float, plot: bool = False, job: str | None = None,
           emit: Callable[[dict], None] = emit_json) -> None:
    output.info = output.info | {"command": command, **argv_info,
                                 "total_s": round(time.perf_counter() - started, 3)}
    format, subtype = file_format
    files = output.save(out, force=force, subtype=subtype, format=format, plot=plot)
    if json_out:
        emit({**({"job": job} if job else {}), "out": str(out), "files": [str(f) for f in files], "info": output.info})
    elif not quiet:
        names = ", ".join(f.name for f in files)
        layout = "mono" if output.channels == 1 else f"{output.channels} channels"
        err_console.print(f"wrote {names} to {out} ({output.duration:.2f} s at {output.sample_rate} Hz, {layout}, "
                          f"{output.info['total_s']:.1f} s)", soft_wrap=True)
    for w in output.info.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
