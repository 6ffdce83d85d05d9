"""The conditioner: CLAP text, audio and null embeddings, as MusicLDM uses them (L2-normalised)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .audio import resample
from .config import require_clap


def clap_text_inputs(processor, prompts: Sequence[str]):
    """Token ids and attention mask of ``prompts``, padded, cut to the tokenizer's length."""
    return processor.tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True)


def clap_audio_inputs(processor, clips: torch.Tensor, sample_rate: int):
    """Audio features of ``[B, N]`` clips at the feature extractor's rate.

    The feature extractor is called itself: transformers' ClapProcessor hands it the tokenizer's
    ``max_length`` (64 or 512 samples), which would embed the first few milliseconds only.
    """
    return processor.feature_extractor(list(clips.float().cpu().numpy()), sampling_rate=sample_rate, return_tensors="pt")


@torch.no_grad()
def clap_text_embedding(clap, processor, prompts: Sequence[str]) -> torch.Tensor:
    """CLAP text embeddings ``[B, D]``, L2-normalised."""
    device = next(clap.parameters()).device
    inputs = clap_text_inputs(processor, prompts).to(device)
    return _normalised(clap.get_text_features(**inputs))


@torch.no_grad()
def clap_audio_embedding(clap, processor, wav: torch.Tensor, sample_rate: int, clap_rate: int,
                         max_seconds: float) -> torch.Tensor:
    """CLAP audio embeddings ``[B, D]`` of ``[B, N]`` audio: the first ``max_seconds`` only, so the
    result never depends on the feature extractor's random crop. Shared by sampling and training."""
    device = next(clap.parameters()).device
    clips = resample(wav.float().cpu(), sample_rate, clap_rate)[..., : int(max_seconds * clap_rate)]
    inputs = clap_audio_inputs(processor, clips, clap_rate).to(device)
    return _normalised(clap.get_audio_features(**inputs))


def _normalised(out) -> torch.Tensor:
    emb = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.nn.functional.normalize(emb.float(), dim=-1)


class Conditioner:
    """What a task is conditioned on; a model without CLAP has no conditioner (``available`` False)."""

    def __init__(self, clap=None, processor=None, *, model_name: str, sample_rate: int, clap_sample_rate: int,
                 clap_max_seconds: float):
        self.clap, self.processor = clap, processor
        self.model_name, self.sample_rate = model_name, sample_rate
        self.clap_sample_rate, self.clap_max_seconds = clap_sample_rate, clap_max_seconds
        self._null: torch.Tensor | None = None

    @property
    def available(self) -> bool:
        return self.clap is not None

    def to(self, device: torch.device) -> Conditioner:
        if self.clap is not None:
            self.clap.to(device)
            self._null = None
        return self

    def require(self, param: str) -> None:
        """Refuse ``param`` (a prompt, a reference) on a model without CLAP."""
        require_clap(self.model_name, "clap" if self.available else "none", param)

    def text(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLAP text embeddings ``[B, D]``."""
        self.require("prompt")
        return clap_text_embedding(self.clap, self.processor, prompts)

    def audio(self, wav: torch.Tensor) -> torch.Tensor:
        """CLAP audio embeddings ``[B, D]`` of ``[B, N]`` audio at the model's rate (its first
        ``clap_max_seconds``, never a random crop)."""
        self.require("reference")
        return clap_audio_embedding(self.clap, self.processor, wav, self.sample_rate, self.clap_sample_rate,
                                    self.clap_max_seconds)

    def null(self) -> torch.Tensor | None:
        """The "no condition" embedding (CLAP of the empty text, as in MusicLDM); None without CLAP."""
        if not self.available:
            return None
        if self._null is None:
            self._null = self.text([""])
        return self._null
