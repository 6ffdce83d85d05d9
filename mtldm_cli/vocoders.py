"""Trained vocoders: log-mel ``[B, frames, n_mels]`` -> waveform ``[B, frames * hop]``.

Vocos (Siuzdak, 2023) predicts each STFT frame's magnitude and phase with a ConvNeXt stack at the
mel frame rate and lets an inverse STFT make the samples: it keeps pitch as a GAN vocoder does, at a
fraction of HiFi-GAN's cost on a CPU (no convolution runs at the sample rate). The model code is the
``vocos`` package's; the on-disk layout (config.json + model.safetensors) is ours, as the UNet's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class VocosConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = "vocos"  # tells a Vocos folder from a HiFi-GAN one
    n_mels: int = Field(64, ge=1)
    dim: int = Field(256, ge=8)
    intermediate_dim: int = Field(768, ge=8)
    num_layers: int = Field(8, ge=1)
    n_fft: int = Field(1024, ge=16)
    hop_length: int = Field(256, ge=1)

    @classmethod
    def read(cls, folder: str | Path) -> VocosConfig:
        return cls.model_validate(json.loads((Path(folder) / CONFIG_NAME).read_text()))


class VocosVocoder(torch.nn.Module):
    """Vocos' backbone and ISTFT head ("same" padding: ``frames * hop`` samples for ``frames`` frames)."""

    def __init__(self, config: VocosConfig):
        super().__init__()
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        self.config = config
        self.backbone = VocosBackbone(input_channels=config.n_mels, dim=config.dim,
                                      intermediate_dim=config.intermediate_dim, num_layers=config.num_layers)
        self.head = ISTFTHead(dim=config.dim, n_fft=config.n_fft, hop_length=config.hop_length, padding="same")
        compact_buffers(self)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        single = logmel.dim() == 2
        x = (logmel[None] if single else logmel).transpose(-1, -2).float()
        wav = self.head(self.backbone(x))
        return wav[0] if single else wav

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> VocosVocoder:
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(VocosConfig.read(folder))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
        return model.eval()


def compact_buffers(module: torch.nn.Module) -> None:
    """Give every buffer a storage of its own size: ``torch.hann_window`` returns a view of a longer
    one, which safetensors (accelerate's checkpoints) refuses to save or load."""
    for buf in module.buffers():
        if buf.untyped_storage().nbytes() != buf.numel() * buf.element_size():
            buf.data = buf.data.clone()
