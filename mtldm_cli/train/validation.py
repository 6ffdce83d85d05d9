"""What each save measures on the validation split (main process only), with random streams of its
own so that resuming stays exact: the VAE's round trip, the UNet's epsilon loss on fixed noise and
sampled clips, the vocoder against Griffin-Lim."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import is_silent, staged_dir
from ..config import PipelineConfig
from .config import STAGES
from .logs import write_validation
from .loop import Trainer, stem_mels, step_generator


class Validation:
    """Measurements of one run's validation windows (the same windows at every save)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.cfg, self.out, self.acc = trainer.cfg, trainer.out, trainer.acc
        self.front, self.frames, self.val = trainer.front, trainer.frames, trainer.val
        self._cache: dict = {}

    def _val_stems(self) -> Optional[torch.Tensor]:
        """``[K, S, N]``: the same windows at every save, spread over the validation split."""
        if self.val is None:
            return None
        if "stems" not in self._cache:
            idx = np.unique(np.linspace(0, len(self.val) - 1, self.cfg.validation.items).round().astype(int))
            self._cache["stems"] = torch.stack([self.val[(int(i), 0)]["stems"] for i in idx])
        return self._cache["stems"].to(self.acc.device)

    def _val_clips(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Validation stems as ``[K*S, N]`` clips and their log-mels, silent stems left out."""
        stems = self._val_stems()
        if stems is None:
            return None
        clips = stems.reshape(-1, stems.shape[-1])
        clips = clips[[not is_silent(c) for c in clips]]
        return clips, self.front(clips, self.frames)

    def _griffin_lim(self, mel: torch.Tensor) -> torch.Tensor:
        from ..audio import griffin_lim_vocoder

        if "gl" not in self._cache:
            self._cache["gl"] = griffin_lim_vocoder(self.cfg.audio).to(mel.device)
        return self._cache["gl"](mel)

    @torch.no_grad()
    def vae(self, vae, step: int) -> None:
        got = self._val_clips()
        if got is None:
            return
        clips, mel = got
        rec = vae.decode(vae.encode(mel[:, None]).latent_dist.mode()).sample[:, 0]
        wav = self._griffin_lim(rec)
        self._write("vae", step, {"mel_l1": float((rec - mel).abs().mean()),
                                  "mrstft_griffin_lim": float(mrstft(wav, clips))})

    @torch.no_grad()
    def vocoder(self, voc, step: int) -> None:
        got = self._val_clips()
        if got is None:
            return
        clips, mel = got
        if "mrstft_gl" not in self._cache:  # the true mels do not change: measure Griffin-Lim once
            self._cache["mrstft_gl"] = float(mrstft(self._griffin_lim(mel), clips))
        wav = voc(mel)[..., :clips.shape[-1]]
        self._write("vocoder", step, {"mrstft_vocoder": float(mrstft(wav, clips)),
                                      "mrstft_griffin_lim": self._cache["mrstft_gl"],
                                      "mel_l1_vocoder": float((self.front(wav, self.frames) - mel).abs().mean())})

    @torch.no_grad()
    def clap(self, model, processor, step: int) -> None:
        """Text-to-audio retrieval among the validation windows (held-out phrasings): R@1, and chance."""
        import random

        from ..data.captions import caption
        from .clap import clap_inputs, track_metas

        c = self.cfg.clap
        if self.cfg.data.validation is None or c is None:
            return
        if "clap" not in self._cache:
            data = self.trainer.dataset(self.cfg.data.validation, c.seconds)
            idx = np.unique(np.linspace(0, len(data) - 1, max(2, self.cfg.validation.items)).round().astype(int))
            items = [data[(int(i), 0)] for i in idx]
            metas, rng = track_metas(data), random.Random(0)
            texts = [caption(metas[it["track"]], it["start"], c.seconds, rng, held_out=True) for it in items]
            self._cache["clap"] = (texts, torch.stack([it["mix"] for it in items]))
        texts, mix = self._cache["clap"]
        training = model.training
        model.eval()  # no dropout, and batch norm's running statistics are read, never updated by validation
        try:
            out = model(**clap_inputs(processor, texts, mix, self.cfg.audio.sample_rate).to(self.acc.device), return_loss=True)
        finally:
            model.train(training)
        hits = out.logits_per_text.argmax(-1).cpu() == torch.arange(len(texts))
        self._write("clap", step, {"loss": float(out.loss), "r1_text_to_audio": float(hits.float().mean()),
                                   "r1_chance": 1 / len(texts)})

    @torch.no_grad()
    def unet(self, unet, vae, clap, step: int) -> None:
        """Epsilon loss on validation windows with fixed noise and timesteps, and sampled clips."""
        from ..samplers import q_sample, training_scheduler

        stems = self._val_stems()
        if stems is None:
            return
        b, s = stems.shape[:2]
        g = step_generator(self.cfg.seed, len(STAGES), 0, 0)  # a stream no training step uses
        if "latents" not in self._cache:  # the UNet stage's VAE is frozen: encode the windows once
            z = vae.encode(stem_mels(self.front, stems, self.frames)).latent_dist.mode()
            self._cache["latents"] = (z * vae.config.scaling_factor).reshape(b, s, *z.shape[1:])
        x0 = self._cache["latents"]
        alphas = training_scheduler().alphas_cumprod
        t = torch.linspace(0, len(alphas) - 1, b).long()
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        cond = None if clap is None else clap.null.expand(b, -1)
        eps = unet(q_sample(x0, alphas[t].view(b, 1, 1, 1, 1).to(x0.device), noise), t.to(x0.device), cond)
        self._write("unet", step, {"eps_mse": float(F.mse_loss(eps.float(), noise))})
        if self.cfg.validation.samples:
            self._sample_clips(unet, vae, clap, step)

    def _sample_clips(self, unet, vae, clap, step: int) -> None:
        from ..audio import griffin_lim_vocoder
        from ..pipeline import MultiTrackPipeline
        from ..samplers import training_scheduler

        cfg = self.cfg
        pipe = MultiTrackPipeline(
            config=PipelineConfig(name=cfg.name, audio=cfg.audio, conditioning="none" if clap is None else "clap",
                                  vocoder="griffin-lim", sampling=cfg.sampling),
            vae=vae, unet=unet, vocoder=griffin_lim_vocoder(cfg.audio), scheduler=training_scheduler(),
            clap=None if clap is None else clap.model, clap_processor=None if clap is None else clap.processor)
        pipe.to(self.acc.device)
        folder = self.out / "training" / "samples" / f"unet-{step:07d}"
        folder.parent.mkdir(exist_ok=True)
        seconds = self.frames * cfg.audio.hop_length / cfg.audio.sample_rate
        with staged_dir(folder) as tmp:
            for k in range(cfg.validation.samples):
                out = pipe.generate(duration=seconds, steps=cfg.validation.sample_steps, seed=k)
                out.save(tmp / f"seed{k}", force=True)

    def _write(self, stage: str, step: int, values: dict) -> None:
        write_validation(self.out / "training" / "validation.csv", stage, step, values)


def mrstft(est: torch.Tensor, ref: torch.Tensor, resolutions=None) -> torch.Tensor:
    """MR-STFT distance over the samples both have (a vocoder may return a few more or fewer), at
    ``resolutions`` (default: the metric's)."""
    from ..metrics import MRSTFT_RESOLUTIONS, mrstft_distance

    n = min(est.shape[-1], ref.shape[-1])
    return mrstft_distance(est[..., :n], ref[..., :n], resolutions=resolutions or MRSTFT_RESOLUTIONS)

