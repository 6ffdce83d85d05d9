"""Trained vocoders: log-mel ``[B, frames, n_mels]`` -> waveform ``[B, frames * hop]``.

Vocos (Siuzdak, 2023) predicts each STFT frame's magnitude and phase with a ConvNeXt stack at the
mel frame rate and lets an inverse STFT make the samples, at a fraction of HiFi-GAN's cost on a CPU
(no convolution runs at the sample rate). The backbone and inverse STFT are the ``vocos`` package's;
the on-disk layout is ours, the UNet's (``weights.py``).

Its head predicts each frame's phase from that frame's features. A held note gives the same log-mel
frame after frame, so a convolutional stack gives it the same phase in every frame: the note restarts
at each hop, a buzz at the frame rate that a pitch tracker takes for the note (docs/demo-model.md).
Our ``integrated`` head instead predicts each frame's phase advance (the bin's own advance plus a
deviation) and sums it over frames, plus a per-frame offset for onsets, each angle from two outputs
(``atan2``, APNet's parallel estimation): a held note then keeps turning at its own frequency.

The learned magnitude can still lose which pitch classes sound (the key). With ``magnitude:
mel-prior`` (FreeV, Lv et al., 2024) the backbone reads the least-squares inverse of the mel filters
(torchaudio's ``InverseMelScale``), which keeps every partial in its bin, and the head learns a
log-magnitude correction to it that starts at zero.

An integrated phase keeps a note turning but has no reason to line the bins up where a drum hits: the
attack smears over the 64 ms window. With ``onset_reset`` the integration restarts at every onset
frame of the log-mel (its mean rectified flux over the threshold) from the phase of an impulse
``onset_delay`` samples after that frame's window centre: the phase vocoder's phase reset at
transients (Röbel, 2003). It needs no training; docs/demo-model.md has what it measures. With
``onset_reset_stems`` only the named stems' items are reset, each stem with its own threshold and
delay (the caller names each item's stem): a reset cuts a ringing string's phase at every strum, so
the demo resets its drums, bass and piano and leaves its guitar alone, and an impulse at the frame's
centre lines a bass or piano note up where one 8 ms later suits a drum hit.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .weights import SafetensorsLayout


class OnsetReset(BaseModel):
    """One stem's phase restart: at each frame whose mean rectified log-mel flux exceeds
    ``threshold``, from the phase of an impulse ``delay`` samples after the frame's window centre."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(gt=0)
    delay: int = 128


class VocosConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = "vocos"  # tells a Vocos folder from a HiFi-GAN one
    n_mels: int = Field(64, ge=1)
    dim: int = Field(256, ge=8)
    intermediate_dim: int = Field(768, ge=8)
    num_layers: int = Field(8, ge=1)
    n_fft: int = Field(1024, ge=16)
    hop_length: int = Field(256, ge=1)
    phase: Literal["absolute", "integrated"] = "absolute"  # absolute: Vocos' own head
    magnitude: Literal["learned", "mel-prior"] = "learned"  # learned: Vocos' own head
    # the mel filters the prior inverts (the front end's; read only for mel-prior)
    sample_rate: int = Field(16000, ge=1)
    f_min: float = Field(0.0, ge=0)
    f_max: float = Field(8000.0, gt=0)
    log_clamp: float = Field(1e-5, gt=0)
    # integrated phase only: restart it at log-mel onsets (None: never), from an impulse this late
    onset_reset: float | None = Field(None, gt=0)
    onset_delay: int = 128
    # None: every item as above; else only these stems, each its own way (a list of names: as above)
    onset_reset_stems: dict[str, OnsetReset] | None = None

    @model_validator(mode="before")
    @classmethod
    def _stem_names(cls, data):
        """A list of stem names restarts those stems with ``onset_reset`` and ``onset_delay``."""
        if isinstance(data, dict) and isinstance(data.get("onset_reset_stems"), (list, tuple)):
            threshold, delay = data.get("onset_reset"), data.get("onset_delay", cls.model_fields["onset_delay"].default)
            data = {**data, "onset_reset_stems": {} if threshold is None else
                    {s: {"threshold": threshold, "delay": delay} for s in data["onset_reset_stems"]}}
        return data


class VocosVocoder(SafetensorsLayout, torch.nn.Module):
    """Vocos' backbone and ISTFT head ("same" padding: ``frames * hop`` samples for ``frames`` frames)."""

    config_class = VocosConfig

    def __init__(self, config: VocosConfig):
        super().__init__()
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        self.config = config
        bins = config.n_fft // 2 + 1
        prior = config.magnitude == "mel-prior"
        self.backbone = VocosBackbone(input_channels=bins if prior else config.n_mels, dim=config.dim,
                                      intermediate_dim=config.intermediate_dim, num_layers=config.num_layers)
        self.head = ISTFTHead(dim=config.dim, n_fft=config.n_fft, hop_length=config.hop_length, padding="same")
        if config.phase == "integrated":
            out = torch.nn.Linear(config.dim, 5 * bins)  # log-magnitude; advance deviation and offset, 2 each
            with torch.no_grad():  # start with no deviation and no offset: cos-parts 1, sin-parts ~0
                w, b = out.weight.view(5, bins, -1), out.bias.view(5, bins)
                w[1:].normal_(std=1e-3)
                w[[1, 3]] = 0
                b[1:] = 0
                b[[1, 3]] = 1
            self.head.out = out
            self.advance: torch.Tensor  # each bin's phase advance in one hop, at its centre frequency
            self.register_buffer("advance", 2 * torch.pi * torch.arange(bins) * config.hop_length / config.n_fft,
                                 persistent=False)
        if prior:
            import torchaudio

            with torch.no_grad():  # the correction to the prior starts at zero
                self.head.out.weight[:bins] = 0
                self.head.out.bias[:bins] = 0
            fb = torchaudio.functional.melscale_fbanks(bins, config.f_min, config.f_max, config.n_mels,
                                                       config.sample_rate, norm="slaney", mel_scale="slaney")
            self.inverse_mel: torch.Tensor  # [bins, n_mels]: the minimum-norm least-squares inverse
            self.register_buffer("inverse_mel", torch.linalg.pinv(fb.T), persistent=False)
        compact_buffers(self)

    def forward(self, logmel: torch.Tensor, *, with_spectrum: bool = False, stems: list[str] | None = None):
        """The waveform; with ``with_spectrum``, also the complex STFT it was made from (training's
        phase losses take it through this forward, so a DistributedDataParallel wrapper sees it).
        ``stems``: each item's stem, for ``onset_reset_stems``."""
        single = logmel.dim() == 2
        spec = self.spectrum(logmel[None] if single else logmel, stems=stems)
        wav = self.head.istft(spec)
        if single:
            wav, spec = wav[0], spec[0]
        return (wav, spec) if with_spectrum else wav

    def spectrum(self, logmel: torch.Tensor, *, stems: list[str] | None = None) -> torch.Tensor:
        """``[B, frames, n_mels]`` -> the complex STFT ``[B, n_fft // 2 + 1, frames]`` the head inverts
        (log-magnitude and phase from one linear layer, as Vocos' head; or the integrated phase)."""
        log_mag, phase = self.head_terms(logmel)
        if self.config.phase == "integrated":
            advance, offset = phase
            phase = torch.cumsum(advance, dim=-1) + offset
            plan = self.resets(len(logmel), stems)
            if any(plan):
                threshold = torch.tensor([p.threshold if p else float("inf") for p in plan], device=phase.device)
                delay = torch.tensor([p.delay if p else 0 for p in plan], device=phase.device)
                phase = self.reset_at_onsets(phase, logmel, threshold=threshold, delay=delay)
        return torch.clip(torch.exp(log_mag), max=1e2) * (torch.cos(phase) + 1j * torch.sin(phase))

    def head_terms(self, logmel: torch.Tensor):
        """The head's log-magnitude ``[B, bins, frames]`` (the mel prior added) and its phase: the
        absolute phase, or for the integrated head each frame's phase advance and offset, before
        :meth:`spectrum` sums them (benchmarks/vocoder_attacks.py sums them another way)."""
        features = logmel.transpose(-1, -2).float()
        if self.config.magnitude == "mel-prior":
            features = self.prior_log_magnitude(features)
        x = self.head.out(self.backbone(features)).transpose(1, 2)
        if self.config.phase == "absolute":
            log_mag, phase = x.chunk(2, dim=1)
        else:
            log_mag, dev_cos, dev_sin, off_cos, off_sin = x.chunk(5, dim=1)
            phase = (self.advance[:, None] + torch.atan2(dev_sin, dev_cos), torch.atan2(off_sin, off_cos))
        if self.config.magnitude == "mel-prior":
            log_mag = log_mag + features
        return log_mag, phase

    def resets(self, items: int, stems: list[str] | None) -> list[OnsetReset | None]:
        """Each item's restart (None: it keeps its summed phase); with ``onset_reset_stems`` set, only
        items whose stem (``stems``) it names, and none when the stems are not given."""
        c = self.config
        if c.onset_reset_stems is None:
            every = None if c.onset_reset is None else OnsetReset(threshold=c.onset_reset, delay=c.onset_delay)
            return [every] * items
        if stems is None:
            return [None] * items
        if len(stems) != items:
            raise ValueError(f"stems names {len(stems)} items, the log-mel has {items}")
        return [c.onset_reset_stems.get(s) for s in stems]

    def onsets(self, logmel: torch.Tensor, threshold: float | torch.Tensor | None = None) -> torch.Tensor:
        """``[B, frames]``: True where the mean rectified log-mel flux from the frame before exceeds
        ``threshold`` (one, or one an item; default ``onset_reset``)."""
        limit = torch.as_tensor(self.config.onset_reset if threshold is None else threshold, device=logmel.device)
        flux = torch.relu(logmel.float().diff(dim=1)).mean(-1)
        above = flux > (limit[:, None] if limit.dim() else limit)
        return torch.cat([torch.zeros_like(above[:, :1]), above], dim=1)

    def reset_at_onsets(self, phase: torch.Tensor, logmel: torch.Tensor, *,
                        threshold: float | torch.Tensor | None = None, delay: int | torch.Tensor | None = None,
                        start: torch.Tensor | None = None) -> torch.Tensor:
        """The integrated ``phase`` ``[B, bins, frames]`` restarted at each onset frame (``threshold``,
        default ``onset_reset``) from ``start``'s phase there (default: the linear phase of an impulse
        ``delay`` samples after the frame's centre, default ``onset_delay``; either one an item); the
        frames after it keep their own advances from that start.
        benchmarks/vocoder_attacks.py restarts from the true phase with it."""
        onset = self.onsets(logmel, threshold)
        frame = torch.arange(onset.shape[1], device=onset.device).expand_as(onset)
        last = torch.where(onset, frame, -1).cummax(dim=1).values[:, None].expand_as(phase)
        at = last.clamp(min=0)
        if start is None:
            k = torch.arange(phase.shape[1], device=phase.device, dtype=phase.dtype)[:, None]
            late = torch.as_tensor(self.config.onset_delay if delay is None else delay, device=phase.device, dtype=phase.dtype)
            late = late[:, None, None] if late.dim() else late
            anchor = -torch.pi * k * (1 + 2 * late / self.config.n_fft)  # the STFT frame starts n_fft/2 before its centre
        else:
            anchor = torch.gather(start, 2, at)
        return torch.where(last >= 0, anchor + phase - torch.gather(phase, 2, at), phase)

    def prior_log_magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, frames]`` log-mel -> ``[B, bins, frames]`` log-magnitude through the least-squares
        inverse of the mel filters, negative values cut to zero as ``InverseMelScale`` does."""
        linear = torch.relu(self.inverse_mel @ logmel.exp())
        return torch.log(torch.clamp(linear, min=self.config.log_clamp))

    def target_spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """The STFT of ``[B, frames * hop]`` audio on the head's own frames ("same" padding, its
        window): what the head would have to output to give back ``wav`` exactly."""
        istft = self.head.istft
        pad = (istft.win_length - istft.hop_length) // 2
        return torch.stft(torch.nn.functional.pad(wav.float(), (pad, pad)), istft.n_fft, istft.hop_length,
                          istft.win_length, window=istft.window, center=False, return_complex=True)


def anti_wrapped_phase_loss(pred: torch.Tensor, target: torch.Tensor, *, absolute: bool = True) -> torch.Tensor:
    """APNet's phase losses (Ai and Ling, 2023) between two complex STFTs ``[B, bins, frames]``:
    instantaneous phase, group delay (along frequency) and instantaneous frequency (along time),
    each an anti-wrapped distance, weighted by the target's magnitude so silent bins do not count.
    Without ``absolute``, the instantaneous phase is left out: an integrated phase has no origin."""
    def aw(x: torch.Tensor) -> torch.Tensor:
        return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()

    p, t = pred.angle(), target.angle()
    w = target.abs()
    w = w / w.mean(dim=(1, 2), keepdim=True).clamp(min=1e-8)
    gd = (aw(p.diff(dim=1) - t.diff(dim=1)) * w[:, 1:]).mean()
    inst = (aw(p.diff(dim=2) - t.diff(dim=2)) * w[..., 1:]).mean()
    return gd + inst + ((aw(p - t) * w).mean() if absolute else 0)


def compact_buffers(module: torch.nn.Module) -> None:
    """Give every buffer a storage of its own size: ``torch.hann_window`` returns a view of a longer
    one, which safetensors (accelerate's checkpoints) refuses to save or load."""
    for buf in module.buffers():
        if buf.untyped_storage().nbytes() != buf.numel() * buf.element_size():
            buf.data = buf.data.clone()
