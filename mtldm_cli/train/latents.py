"""The UNet stage's latent cache: every training window on a grid, encoded once by the frozen VAE
(and CLAP).

The VAE never changes while the UNet trains, yet encoding a 10.24 s batch costs about as much as the
UNet's own step (docs/demo-model.md). So each window that starts on a grid of ``stride`` mel frames
is encoded once, alone (as the pipeline encodes one), and stored as its posterior mean and deviation
in float16, with the CLAP audio embedding of its mix. Training draws a posterior sample per step.

The cache is one file per track (written atomically: an interrupted build keeps what it finished)
and an ``index.json`` naming what it was built from: the VAE's and CLAP's weights (sha256), the
audio config, the window, the stride and the tracks. Anything else in it, and it is built anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import soundfile as sf
import torch
from torch.utils.data import Dataset

from ..audio import atomic_write_text, write_file_set
from ..checkpoints import sha256_file
from ..config import AudioConfig
from ..data.datasets import StemDataset, Track, read_segment
from ..names import safe_component
from .loop import stem_mels

Embed = Callable[[torch.Tensor], torch.Tensor]  # [B, N] mixes -> [B, D] CLAP audio embeddings


def grid_starts(track: Track, audio: AudioConfig, frames: int, stride: int) -> list[int]:
    """The first mel frame of every whole window of ``track`` that starts on the grid."""
    samples = int(track.seconds * audio.sample_rate)
    last = samples // audio.hop_length - frames
    return list(range(0, last + 1, stride))


def folder_digest(folder: Path) -> str:
    """sha256 over a component folder's weight files (names and bytes), in name order."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        h.update(f"{path.name}:{sha256_file(path)}".encode())
    return h.hexdigest()


class LatentCache(Dataset):
    """Cached windows as dataset items ``{"mean", "std": [S, C, T, F] float16, "clap": [D]}`` (no
    ``clap`` without a CLAP); ``locate(i)`` says which track and start frame item ``i`` is."""

    def __init__(self, items: list[tuple[int, int]], tracks: dict[int, dict]):
        self.items, self._tracks = items, tracks

    def __len__(self) -> int:
        return len(self.items)

    def locate(self, index: int) -> tuple[int, int]:
        k, row = self.items[index]
        return k, self._tracks[k]["starts"][row]

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        if isinstance(index, tuple):  # StepBatches' (index, epoch): the grid does not move with the epoch
            index = index[0]
        k, row = self.items[index]
        track = self._tracks[k]
        item = {"mean": track["mean"][row], "std": track["std"][row]}
        if "clap" in track:
            item["clap"] = track["clap"][row]
        return item

    @classmethod
    def build(cls, folder: Path, data: StemDataset, vae, front, *, audio: AudioConfig, frames: int, stride: int,
              vae_folder: Path, clap: Optional[Embed] = None, clap_folder: Optional[Path] = None,
              rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
              progress: Optional[Callable[[int, int], None]] = None) -> LatentCache:
        """Encode what ``folder`` lacks (each process ``rank`` of ``world`` its share of the tracks),
        then load it all. A track that fails to read is left out (``data.leave_out``), as the dataset
        itself would."""
        key = {"vae": folder_digest(vae_folder), "clap": None if clap_folder is None else folder_digest(clap_folder),
               "audio": audio.model_dump(mode="json"), "frames": frames, "stride": stride,
               "tracks": [t.name for t in data.tracks]}
        index = folder / "index.json"
        if rank == 0:
            try:
                same = json.loads(index.read_text()) == key
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                atomic_write_text(index, json.dumps(key))
        barrier()
        todo = [k for k in range(rank, len(data.tracks), world) if not _track_file(folder, data, k).is_file()]
        device = next(vae.parameters()).device
        for done, k in enumerate(todo):
            try:
                encoded = _encode_track(data, k, vae, front, audio, frames, stride, clap, device)
            except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
                data.leave_out(k, f"unreadable while caching latents ({type(e).__name__}: {e})")
                continue
            write_file_set({_track_file(folder, data, k): functools.partial(torch.save, encoded)})
            if progress is not None:
                progress(done + 1, len(todo))
        barrier()
        tracks, items = {}, []
        for k in range(len(data.tracks)):
            path = _track_file(folder, data, k)
            if not path.is_file():  # another process could not read it
                data.leave_out(k, "unreadable while caching latents")
                continue
            tracks[k] = torch.load(path, weights_only=True)
            items += [(k, row) for row in range(len(tracks[k]["starts"]))]
        return cls(items, tracks)


def _track_file(folder: Path, data: StemDataset, k: int) -> Path:
    return folder / f"{k:05d}-{safe_component(data.tracks[k].name, 'track')}.pt"


@torch.no_grad()
def _encode_track(data: StemDataset, k: int, vae, front, audio: AudioConfig, frames: int, stride: int,
                  clap: Optional[Embed], device) -> dict:
    track = data.tracks[k]
    starts = grid_starts(track, audio, frames, stride)
    seconds = frames * audio.hop_length / audio.sample_rate
    means, stds, claps = [], [], []
    for start in starts:  # one window at a time, as the pipeline encodes one
        stems = read_segment(track, data.stems, start * audio.hop_length / audio.sample_rate, seconds,
                             audio.sample_rate)[None].to(device)
        post = vae.encode(stem_mels(front, stems, frames)).latent_dist
        means.append(post.mean.half().cpu())
        stds.append(post.std.half().cpu())
        if clap is not None:
            claps.append(clap(stems.sum(1)).float().cpu())
    out = {"starts": starts, "mean": torch.stack(means), "std": torch.stack(stds)}
    if clap is not None:
        out["clap"] = torch.cat(claps)
    return out

