"""Audio I/O (soundfile), resampling and the log-mel front end (torchaudio)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np
import soundfile as sf

from .config import AudioConfig
from .errors import NAME_ONLY, AudioError, OutputError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Audio:
    """A file read once: its samples as soundfile gives them (float32 ``[N, C]``), its rate, its sample
    format (``pcm16``, ``pcm24``, ``float`` or None) and the name errors use."""

    data: np.ndarray
    sample_rate: int
    name: str
    subtype: str | None = None

    @property
    def samples(self) -> np.ndarray:
        """Mono ``[N]``: the mean of the channels (what the model hears)."""
        return self.data.mean(axis=1)

    @property
    def channels(self) -> int:
        return self.data.shape[1]


AudioLike = Union[str, os.PathLike, np.ndarray, "torch.Tensor", Audio]

# soundfile's sample formats as the subtype we write back (wider ones become float)
READ_SUBTYPES = {"PCM_S8": "pcm16", "PCM_U8": "pcm16", "PCM_16": "pcm16", "PCM_24": "pcm24", "PCM_32": "float",
                 "FLOAT": "float", "DOUBLE": "float"}


def _read(path: str | os.PathLike) -> tuple[np.ndarray, int, str | None]:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file", "give a WAV or FLAC file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: cannot be read (permission denied)", "check the file's permissions")
    try:
        with sf.SoundFile(str(path)) as f:
            subtype = READ_SUBTYPES.get(f.subtype)
            data = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(
            f"{path}: not a readable audio file ({reason})", "convert it to WAV or FLAC"
        ) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples", "give a non-empty file")
    check_finite(data, str(path))
    return data, int(sr), subtype


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read any soundfile-readable file as float32 mono ``[N]`` at its own rate."""
    data, sr, _ = _read(path)
    return data.mean(axis=1), sr


MIN_SECONDS = 0.1  # shorter than any model's STFT window: no command can use it


def load_audio(path: str | os.PathLike) -> Audio:
    """:func:`read_audio` as an :class:`Audio` named by its path, at least ``MIN_SECONDS`` long."""
    data, sr, subtype = _read(path)
    check_length(len(data), sr, str(path))
    return Audio(data, sr, str(path), subtype)


def check_length(samples: int, sample_rate: int, name: str) -> None:
    if samples < MIN_SECONDS * sample_rate:
        raise AudioError(f"{name}: is {samples / sample_rate:.3f} s long, shorter than the {MIN_SECONDS} s a command needs",
                         "give a longer clip")


def common_length(lengths: Mapping[str, int], sample_rate: int, what: str) -> int:
    """Signals that must be equally long: a difference under 10 ms (resampling rounding) is cut,
    a larger one is refused."""
    lo, hi = min(lengths.values()), max(lengths.values())
    if hi - lo > 0.01 * sample_rate:
        desc = ", ".join(f"{s} {n / sample_rate:.2f} s" for s, n in lengths.items())
        raise AudioError(f"{what} differ in length ({desc})", "trim them to the same length")
    return lo


def audio_name(audio: AudioLike, default: str | None) -> str | None:
    """The name a path or loaded file goes by in messages and run.json; ``default`` for arrays."""
    if isinstance(audio, Audio):
        return audio.name
    return str(audio) if isinstance(audio, (str, os.PathLike)) else default


def check_finite(wav: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: contains NaN or infinite samples", "re-export the audio")
    return wav


def is_silent(wav: np.ndarray | torch.Tensor, threshold: float = 1.5e-5) -> bool:
    """MSDM's activity test: mean absolute amplitude below ``threshold``."""
    return float(np.abs(wav).mean() if isinstance(wav, np.ndarray) else wav.abs().mean()) < threshold


MAX_CHANNELS = 8


def channels_first(audio, name: str):
    """An array or tensor as a float32 CPU tensor ``[C, N]``. The rule: ``[N]`` is mono; of a 2-D
    array's axes the one of at most ``MAX_CHANNELS`` (8) is the channels, so ``[C, N]`` and soundfile's
    ``[N, C]`` both work; a 2-D array whose axes are both that short or both longer is ambiguous."""
    import torch

    wav = audio if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio))
    wav = wav.detach().to("cpu", torch.float32)
    if wav.numel() == 0:
        raise AudioError(f"{name}: contains no audio samples (shape {tuple(wav.shape)})", "give a non-empty signal")
    if wav.ndim == 1:
        return wav[None]
    if wav.ndim == 2:
        short = [n <= MAX_CHANNELS for n in wav.shape]
        if short == [True, False]:
            return wav
        if short == [False, True]:
            return wav.T.contiguous()
    raise AudioError(f"{name}: cannot tell channels from samples in an array of shape {tuple(wav.shape)}",
                     f"give [samples], [channels, samples] or [samples, channels] with at most {MAX_CHANNELS} channels")


def as_audio(audio: AudioLike, sample_rate: int | None, default_rate: int, name: str) -> Audio:
    """A path, array, tensor or :class:`Audio` as an :class:`Audio` (an array at ``sample_rate``, else
    ``default_rate``), checked: finite, at least ``MIN_SECONDS`` long."""
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio)
    if isinstance(audio, Audio):
        return audio
    wav = channels_first(audio, name)
    if not bool(np.isfinite(wav.numpy()).all()):
        raise AudioError(f"{name}: contains NaN or infinite samples", "clean the signal")
    rate = sample_rate or default_rate
    check_length(wav.shape[-1], rate, name)
    return Audio(wav.T.numpy(), rate, name)


def to_mono_tensor(audio: AudioLike, sample_rate: int | None, target_rate: int, name: str):
    """Path, array or tensor (:func:`channels_first`'s layouts) -> float32 mono tensor at ``target_rate``."""
    import torch

    a = as_audio(audio, sample_rate, target_rate, name)
    return resample(torch.from_numpy(a.samples), a.sample_rate, target_rate)


FADE_SECONDS = 0.01


def fade_ends(wav, sample_rate: int, seconds: float = FADE_SECONDS):
    """Raised-cosine fade-in and fade-out over the last axis of a tensor: a generated stem that
    starts or stops mid-note would click when played from or to its edge."""
    import torch

    n = min(round(seconds * sample_rate), wav.shape[-1] // 2)
    if n < 1:
        return wav
    ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, n + 2, dtype=wav.dtype)[1:-1])
    wav = wav.clone()
    wav[..., :n] *= ramp
    wav[..., -n:] *= ramp.flip(0)
    return wav


def conform(wav, rate: int, to_rate: int, channels: int, length: int):
    """``[C, N]`` at ``rate`` -> ``[channels, length]`` at ``to_rate``: resampled, cut or zero-padded
    at the end, mono repeated over the channels and more channels than wanted averaged. Nothing
    changes a sample when rate, channels and length already match."""
    import torch

    if rate != to_rate:
        wav = resample(wav, rate, to_rate)
    if wav.shape[0] != channels:
        wav = wav.mean(0, keepdim=True)
        wav = wav.expand(channels, -1) if channels > 1 else wav
    if wav.shape[-1] != length:
        wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[..., :length]
    return wav


def resample(wav, orig: int, new: int):
    import torchaudio.functional as AF

    return wav if orig == new else AF.resample(wav, orig, new)


class MelFrontEnd:
    """Log-mel as MusicLDM/AudioLDM compute it: reflect pad, magnitude STFT, slaney mel, log clamp."""

    def __init__(self, cfg: AudioConfig):
        import torchaudio

        self.cfg = cfg
        self.pad = (cfg.n_fft - cfg.hop_length) // 2
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
            hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels,
            power=1.0, center=False, norm="slaney", mel_scale="slaney",
        )

    def to(self, device) -> MelFrontEnd:
        self._mel.to(device)
        return self

    def __call__(self, wav, frames: int):
        """``[..., N]`` waveform -> ``[..., frames, n_mels]`` log-mel, padded or cut to ``frames``."""
        import torch
        import torch.nn.functional as F

        lead = wav.shape[:-1]
        x = wav.reshape(-1, wav.shape[-1]).float()
        need = (frames - 1) * self.cfg.hop_length + self.cfg.n_fft - 2 * self.pad
        if x.shape[-1] < need:
            x = F.pad(x, (0, need - x.shape[-1]))
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        mel = self._mel.to(x.device)(x)[..., :frames]
        logmel = torch.log(torch.clamp(mel, min=self.cfg.log_clamp)).transpose(-1, -2)
        return logmel.reshape(*lead, frames, self.cfg.n_mels)


def griffin_lim_vocoder(cfg: AudioConfig, n_iter: int = 64):
    """The vocoder with no weights: log-mel -> magnitude (least squares through the mel filters) ->
    Griffin-Lim phase. A module with the HiFi-GAN's interface: ``[B, frames, n_mels]`` -> ``[B, N]``.
    Its random starting phase comes from a generator of its own, seeded the same every call: the same
    log-mel gives the same audio (torch's global RNG made the same seed give other WAVs)."""
    import torch
    import torchaudio

    class GriffinLimVocoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            n_stft = cfg.n_fft // 2 + 1
            self.inverse_mel = torchaudio.transforms.InverseMelScale(
                n_stft, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, f_min=cfg.f_min, f_max=cfg.f_max,
                norm="slaney", mel_scale="slaney")
            self.griffin_lim = torchaudio.transforms.GriffinLim(
                n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, power=1.0, n_iter=n_iter)

        def forward(self, logmel):
            mag = self.inverse_mel(logmel.float().exp().transpose(-1, -2)).clamp(min=0)
            with torch.random.fork_rng(devices=[mag.device] if mag.device.type == "cuda" else []):
                torch.manual_seed(0)
                return self.griffin_lim(mag)

    return GriffinLimVocoder().eval()


SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}
FORMATS = {"wav": "WAV", "flac": "FLAC"}


def check_file_format(format: str, subtype: str) -> None:
    """Refuse a format and sample format that cannot go together, or either unknown."""
    from .errors import InputError

    if format not in FORMATS:
        raise InputError("{format}: unknown file format", "use wav or flac", format=format)
    if subtype not in SUBTYPES:
        raise InputError("{subtype}: unknown sample format", "use pcm16, pcm24 or float", subtype=subtype)
    if format == "flac" and subtype == "float":
        raise InputError("{subtype}: FLAC holds 16- or 24-bit integer samples, not float",
                         "choose pcm16 or pcm24, or the wav {format}", subtype=subtype, format=NAME_ONLY)


def save_audio_files(
    files: Mapping[Path, np.ndarray], sample_rate: int, *, subtype: str = "pcm16", force: bool = False,
    format: str = "wav",
) -> list[Path]:
    """Write several WAVs all-or-nothing (:func:`write_file_set`)."""
    check_writable(files.keys(), force=force)
    folders = {p.parent for p in files}
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(made_dir(folder))
        write_file_set({path: wav_writer(wav, sample_rate, subtype, format) for path, wav in files.items()})
    return list(files)


def wav_writer(wav: np.ndarray, sample_rate: int, subtype: str = "pcm16", format: str = "wav") -> Callable[[BinaryIO], None]:
    """A writer of one WAV or FLAC (``[N]`` mono or ``[C, N]``) for :func:`write_file_set`. The file is
    made in memory and written with plain file I/O, so a full disk or a size limit is an ``OSError``
    (libsndfile would half-write it)."""
    check_file_format(format, subtype)
    sf_subtype = SUBTYPES[subtype]
    data = np.asarray(wav, dtype=np.float32)
    data = data.T if data.ndim == 2 else data
    if sf_subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)

    def write(f: BinaryIO) -> None:
        buf = io.BytesIO()
        sf.write(buf, data, sample_rate, subtype=sf_subtype, format=FORMATS[format])
        f.write(buf.getbuffer())

    return write


def bytes_writer(data: bytes) -> Callable[[BinaryIO], None]:
    """A writer of ready-made bytes (run.json, a PNG) for :func:`write_file_set`."""
    def write(f: BinaryIO) -> None:
        f.write(data)

    return write


def write_file_set(writers: Mapping[Path, Callable[[BinaryIO], None]], *, remove: Iterable[Path] = ()) -> None:
    """Write a set of files all-or-nothing: each writer fills a temp file beside its target; once all
    are written they are renamed into place, then ``remove`` (an earlier result's files that this set
    does not replace) is deleted. On any failure no file of the set and no temp file is left; a full
    disk or a file-size limit is an :class:`OutputError`."""
    temps: dict[Path, Path] = {}
    path = None
    mode = file_mode()
    try:
        for path, write in writers.items():
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps[path] = Path(name)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                write(f)
        for path, tmp in temps.items():
            os.replace(tmp, path)
        temps.clear()
        for path in remove:
            path.unlink(missing_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot write it ({e.strerror or e})", "free some space, or choose another {folder}",
                          folder=NAME_ONLY) from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def file_mode() -> int:
    """The mode a new file gets under the umask (mkstemp makes owner-only files: ours follow the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temp file beside it: readers see the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def staged_dir(folder: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``folder``; when the block succeeds it takes ``folder``'s place
    (an old one is moved aside, then removed), when it fails it vanishes. Readable by all, like a mkdir."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(paths, *, force: bool) -> None:
    """Fail before any work when an output exists (without ``force``) or its folder can't be made or
    written. Nothing is created: a run that fails later leaves no empty folder behind."""
    paths = list(paths)
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise OutputError(f"{names}: already exists", "pass {force} to overwrite, or choose another {folder}",
                          force=True, folder=NAME_ONLY)
    for folder in {p.parent for p in paths}:
        check_dir(folder)


def check_dir(folder: Path) -> None:
    """:func:`prepare_dir`'s refusals, without creating anything."""
    folder = Path(folder)
    there = next((p for p in [folder, *folder.parents] if p.exists() or p.is_symlink()), Path("."))
    if there == folder and not folder.is_dir():
        raise OutputError(f"{folder}: is not a directory", "choose another {folder}", folder=NAME_ONLY)
    if not there.is_dir():
        raise OutputError(f"{folder}: cannot create it (a folder above it is a file, not a directory)",
                          "choose another {folder}", folder=NAME_ONLY)
    if not os.access(there, os.W_OK | os.X_OK):
        what = "is not writable" if there == folder else "cannot create it (permission denied)"
        raise OutputError(f"{folder}: {what}", "choose another {folder}", folder=NAME_ONLY)


@contextmanager
def made_dir(folder: Path) -> Iterator[Path]:
    """:func:`prepare_dir` for a block that writes into it: if the block fails, the folders this
    made (empty ones only) are removed again."""
    folder = Path(folder)
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    prepare_dir(folder)
    try:
        yield folder
    except BaseException:
        for p in missing:
            try:
                p.rmdir()
            except OSError:
                break
        raise


def output_paths(folder: str | os.PathLike, stems: Iterable[str], format: str = "wav") -> dict[str, Path]:
    """The files a result writes: ``<stem>.wav`` (or ``.flac``) per stem, the mix and ``run.json``."""
    folder = Path(folder)
    return {n: folder / f"{n}.{format}" for n in [*stems, "mix"]} | {"run.json": folder / "run.json"}


def prepare_dir(folder: Path) -> Path:
    """``folder``, made with its parents; :func:`check_dir`'s refusals first."""
    folder = Path(folder)
    check_dir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a race with another process, a full disk
        raise OutputError(f"{folder}: cannot create it ({e.strerror or e})", "choose another {folder}", folder=NAME_ONLY) from None
    return folder


def resample_np(wav: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new:
        return wav
    import torch

    return resample(torch.from_numpy(wav), orig, new).numpy()
