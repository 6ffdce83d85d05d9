"""``mtldm plot``: a result folder's stems and mix as one picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import emit_json, ForceOpt, JsonOpt, QuietOpt, err_console, guarded


def _audio_files(folder: Path) -> list[Path]:
    """The folder's audio in its run.json's order (plain names only), else every WAV/FLAC, mix last."""
    from ..errors import InputError
    from ..names import safe_component

    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory", "give a folder of <stem>.wav files (an --out of mtldm)")
    try:
        listed = json.loads((folder / "run.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        listed = []
    names = [n for n in listed if isinstance(n, str) and n.endswith((".wav", ".flac")) and safe_component(n, "") == n]
    files = [folder / n for n in names if (folder / n).is_file()] or sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac")), key=lambda p: (p.stem.lower() == "mix", p.name))
    if not files:
        raise InputError(f"{folder}: holds no WAV or FLAC files", "give a folder of <stem>.wav files (an --out of mtldm)")
    return files


@guarded
def plot(
    folder: Annotated[Path, typer.Argument(help="A folder of stems (an --out of generate, arrange, separate...).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The PNG to write (default: FOLDER/spectrograms.png).")] = None,
    width: Annotated[int, typer.Option(min=200, max=8000, help="Pixels across the time axis.")] = 1000,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw every stem's spectrogram and the mix's, stacked on one time axis and one dB scale, as a PNG."""
    from ..audio import bytes_writer, check_writable, common_length, made_dir, read_audio, write_file_set
    from ..errors import InputError
    from ..plot import PLOT_FILE, plot_stems

    files = _audio_files(folder)
    read = {p.stem: read_audio(p) for p in files}
    rates = {sr for _, sr in read.values()}
    if len(rates) != 1:
        raise InputError(f"{folder}: the files have different sample rates {sorted(rates)}", "resample them to one rate")
    rate = rates.pop()
    n = common_length({name: len(w) for name, (w, _) in read.items()}, rate, f"the files in {folder}")
    target = out or folder / PLOT_FILE
    check_writable([target], force=force)
    png = plot_stems({name: w[:n] for name, (w, _) in read.items()}, rate, width=width, title=str(folder))
    with made_dir(target.parent):
        write_file_set({target: bytes_writer(png)})
    if json_out:
        emit_json({"out": str(target), "files": [str(p) for p in files]})
    elif not quiet:
        err_console.print(f"wrote {target} ({', '.join(p.name for p in files)})", soft_wrap=True)
