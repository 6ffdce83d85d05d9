"""``mtldm arrange``: given some stems, generate the missing ones."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..audio import read_audio
from ..errors import StemError
from ._common import (Device, DeviceOpt, EtaOpt, FloatOpt, ForceOpt, GuidanceOpt, JsonOpt, ModelOpt, OfflineOpt,
                      OutOpt, PresetOpt, PromptOpt, QuietOpt, RevisionOpt, SamplerOpt, SeedOpt, StepsOpt, finish,
                      guarded, load_pipeline, note, precheck_outputs, progress_callback, sampling_kwargs,
                      split_names)


def stem_from_filename(path: Path, stems: tuple[str, ...]) -> str | None:
    """``bass.wav``, ``bass_take2.flac``, or a unique abbreviation such as ``b.wav`` or ``dr.wav``."""
    name = path.stem.lower()
    exact = [s for s in stems if re.fullmatch(rf"{re.escape(s)}([\W_].*)?", name)]
    if exact:
        return exact[0]
    prefix = [s for s in stems if s.startswith(name)]
    return prefix[0] if len(prefix) == 1 else None


def parse_given(items: list[str], stems: tuple[str, ...]) -> dict[str, Path]:
    """``bass=take3.wav`` names a stem explicitly; ``bass.wav`` names it by its file name."""
    given: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep:
            stem, path = name.strip().lower(), Path(path)
        else:
            path = Path(item)
            if item.lower() in stems and not path.exists():
                raise StemError(f"'{item}' is a stem name, not a file",
                                "to want several stems write --want piano,guitar")
            stem = stem_from_filename(path, stems)
            if stem is None:
                raise StemError(f"{path}: cannot tell which stem this is from its name",
                                f"write it as STEM=PATH, e.g. {stems[0]}={path}")
        if stem in given:
            raise StemError(f"stem '{stem}' is given twice ({given[stem]} and {path})", "give each stem once")
        given[stem] = path
    return given


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
    started = time.perf_counter()
    items = [*(given or []), *(files or [])]
    want_names = split_names(want)
    for item in items:  # fail fast on unreadable files, before the model loads
        path = item.partition("=")[2] or item
        if not re.fullmatch(r"[A-Za-z]+", path) or Path(path).exists():  # a bare word may be a stem name
            read_audio(path)
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
    paths = parse_given(items, pipe.stems)
    note("given: " + ", ".join(f"{s} = {p}" for s, p in paths.items()), quiet or json_out)
    given_names, want_names = pipe.check_arrangement(paths, want_names)
    precheck_outputs(out, [*given_names, *want_names], force)
    with progress_callback("arranging", quiet or json_out) as cb:
        result = pipe.arrange({s: str(p) for s, p in paths.items()}, want_names, prompt=prompt, callback=cb,
                              **sampling_kwargs(preset=preset, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed))
    finish(result, out, command="arrange", argv_info={"given_files": {s: str(p) for s, p in paths.items()}},
           force=force, float_wav=float_wav, json_out=json_out, quiet=quiet, started=started)
