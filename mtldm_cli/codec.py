"""The latent codec: waveform <-> log-mel <-> VAE latent, and back through the vocoder.

It owns the units: ``samples`` of audio, ``mel_frames`` (one per hop) and ``latent_frames`` (one per
``vae_factor`` mel frames), and cuts anything longer than the model's segment into the windows of
``windows.py``, so memory stays flat with length.
"""

from __future__ import annotations

import torch

from .audio import MelFrontEnd
from .config import AudioConfig
from .vocoders import VocosVocoder
from .windows import Window, overlap_units, plan, stitch


class LatentCodec:
    """Per-stem mel front end, VAE and vocoder; latents are ``[B, S, C, latent_frames, F]``."""

    def __init__(self, audio: AudioConfig, vae, vocoder, *, frame_multiple: int = 1, overlap_seconds: float = 2.56):
        """``frame_multiple``: latent frames must be a multiple of it (the UNet's downsampling)."""
        self.audio, self.vae, self.vocoder = audio, vae, vocoder
        self.mel = MelFrontEnd(audio)
        self.frame_multiple, self.overlap_seconds = frame_multiple, overlap_seconds

    def to(self, device: torch.device) -> LatentCodec:
        self.vae.to(device)
        self.vocoder.to(device)
        self.mel.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    # -- units -----------------------------------------------------------------------------------
    @property
    def vae_factor(self) -> int:
        """Mel frames per latent frame (and mel bins per latent bin)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_bins(self) -> int:
        return self.audio.n_mels // self.vae_factor

    def latent_frames(self, samples: int) -> int:
        """Latent frames covering ``samples``, rounded up so the VAE and UNet can downsample them."""
        mel_frames = -(-samples // self.audio.hop_length)
        multiple = self.vae_factor * self.frame_multiple
        return -(-mel_frames // multiple) * multiple // self.vae_factor

    def mel_frames(self, samples: int) -> int:
        return self.latent_frames(samples) * self.vae_factor

    @property
    def window_latent_frames(self) -> int:
        """Latent frames of the segment the model was trained on: longer audio goes window by window."""
        return self.audio.segment_frames // self.vae_factor

    @property
    def segment_samples(self) -> int:
        return round(self.audio.segment_seconds * self.audio.sample_rate)

    def latent_windows(self, latent_frames: int) -> list[Window]:
        width = self.window_latent_frames
        per_second = self.audio.sample_rate / self.audio.hop_length / self.vae_factor
        return plan(latent_frames, width, overlap_units(width, self.overlap_seconds, per_second))

    def sample_windows(self, samples: int) -> list[Window]:
        """Segment-long chunks of audio, overlapping as the latent windows do (in samples)."""
        width = self.segment_samples
        return plan(samples, width, overlap_units(width, self.overlap_seconds, self.audio.sample_rate))

    # -- coding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, S, samples]`` waveforms -> ``[B, S, C, latent_frames, F]`` scaled latents (posterior mode)."""
        b, s, n = wav.shape
        latent_frames = self.latent_frames(n)
        mel = self.mel(wav.to(self.device).reshape(b * s, n), latent_frames * self.vae_factor)[:, None]

        def enc(m):
            return self.vae.encode(m.to(self.vae.dtype)).latent_dist.mode().float()

        z = stitch(enc, mel, self.latent_windows(latent_frames), self.vae_factor, 1) * self.vae.config.scaling_factor
        return z.reshape(b, s, *z.shape[1:])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, samples: int) -> torch.Tensor:
        """``[B, S, C, latent_frames, F]`` latents -> ``[B, S, samples]`` waveforms on the CPU."""
        b, s = latents.shape[:2]
        z = latents.reshape(b * s, *latents.shape[2:]) / self.vae.config.scaling_factor

        def dec(x):
            return self.vae.decode(x.to(self.vae.dtype)).sample.float()

        mel = stitch(dec, z, self.latent_windows(z.shape[-2]), 1, self.vae_factor)[:, 0]
        # a vocoder's frames end a hop or so before the last mel frame's span does: two repeated
        # frames carry the sound to the end, where zero padding made a step to silence
        mel = torch.cat([mel, mel[:, -1:].expand(-1, 2, -1)], dim=1)
        stems = list(self.audio.stems[:s]) * b  # a Vocos may treat a stem its own way (its onset_reset_stems)
        wav = self.vocoder(mel, stems=stems) if isinstance(self.vocoder, VocosVocoder) else self.vocoder(mel)
        wav = torch.nn.functional.pad(wav, (0, max(0, samples - wav.shape[-1])))[..., :samples]
        return wav.reshape(b, s, samples).float().cpu()

    def decode_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, S, C, T, F]`` scaled latents -> ``[B, S, mel_frames, n_mels]`` log-mels, differentiable
        (one window: the separation chunks are segment-long)."""
        b, s = latents.shape[:2]
        z = latents.reshape(b * s, *latents.shape[2:]) / self.vae.config.scaling_factor
        mel = self.vae.decode(z.to(self.vae.dtype)).sample.to(latents.dtype)
        return mel.reshape(b, s, *mel.shape[-2:])
