"""The stages, one object each: our CLAP, the VAE, the multi-track UNet, the vocoder; and what they
write into the model folder (components, pipeline.json)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..audio import atomic_write_text
from ..config import PipelineConfig
from ..errors import InputError
from ..vocoders import anti_wrapped_phase_loss
from .clap import build_clap_processor, clap_config, clap_inputs, track_metas
from .config import STAGES, TrainConfig
from .latents import LatentCache
from .logs import read_validation, save_component
from .loop import Adversary, StepBatches, Trainer, posterior_sample, saved_step, stem_mels, step_generator
from .validation import Validation, mrstft


def build_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL

    v = cfg.vae
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=v.latent_channels, block_out_channels=v.block_out_channels,
        layers_per_block=v.layers_per_block, down_block_types=("DownEncoderBlock2D",) * len(v.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(v.block_out_channels), norm_num_groups=v.norm_groups,
        sample_size=cfg.audio.segment_frames)


class VAEObjective(torch.nn.Module):
    """The VAE and its loss in one forward, so DistributedDataParallel sees (and syncs) all of it."""

    def __init__(self, vae, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, mel: torch.Tensor, g: torch.Generator):
        post = self.vae.encode(mel).latent_dist
        rec = self.vae.decode(posterior_sample(post, g)).sample
        l1 = (rec - mel).abs().mean()
        kl = post.kl().mean() / mel[0].numel()
        return l1 + self.kl_weight * kl, l1, kl



class Stage:
    """One stage of a run; its fields are the trainer's, its measurements go through ``validation``."""

    def __init__(self, trainer: Trainer, validation: Validation):
        self.trainer, self.validation = trainer, validation
        self.cfg, self.out, self.acc = trainer.cfg, trainer.out, trainer.acc
        self.front, self.frames, self.data, self.val = trainer.front, trainer.frames, trainer.data, trainer.val


class VAEStage(Stage):
    """AudioLDM's VAE objective (L1 + KL) on per-stem log-mels."""

    def run(self, *, resume: bool = True) -> None:
        cfg = self.cfg
        vae = VAEObjective(build_vae(cfg), cfg.vae.kl_weight)
        front, frames = self.front, self.frames

        def loss_fn(model, stems, g, **_):
            loss, l1, kl = model(stem_mels(front, stems, frames), g)
            return loss, {"l1": l1, "kl": kl}

        def export(step):
            m = self.acc.unwrap_model(vae).vae
            save_component(lambda p: m.save_pretrained(p), self.out / "vae")
            self.validation.vae(m, step)

        self.trainer.loop("vae", vae, cfg.vae, loss_fn, on_save=export, resume=resume)


class UNetStage(Stage):
    """Epsilon prediction on the frozen VAE's latents (scale_by_std first), with EMA; CLAP-conditioned
    on each window's mix when unet.clap is set."""

    def run(self, *, resume: bool = True) -> None:
        from diffusers.training_utils import EMAModel

        from ..model import MultiTrackUNet
        from ..samplers import q_sample, training_scheduler

        cfg = self.cfg
        vae = self._frozen_vae()
        if cfg.unet.unet.stems != len(cfg.audio.stems) or cfg.unet.unet.latent_channels != vae.config.latent_channels:
            raise InputError("unet.unet.stems / latent_channels do not match audio.stems / the VAE's latent channels")
        clap = self._clap()
        cache = None if cfg.unet.cache_stride_frames is None else self._latent_cache(vae, clap)
        if not (resume and saved_step(self.out / "training" / "unet")):
            self._scale_by_std(vae, cache)
        scale = vae.config.scaling_factor
        torch.manual_seed(cfg.seed)
        unet = MultiTrackUNet(cfg.unet.unet)
        ema = EMAModel(unet.parameters(), decay=cfg.unet.ema_decay)
        ema.to(self.acc.device)
        alphas = training_scheduler().alphas_cumprod
        front, frames, device = self.front, self.frames, self.acc.device
        arrangement = cfg.unet.unet.arrangement

        def latents(stems, batch, g):
            """x0 ``[B, S, C, T, F]`` and the conditioning, from the cache or from the batch's audio (the
            frozen encoders in float32 whatever the stage's precision)."""
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                if stems is None:
                    mean, std = batch["mean"].to(device).float(), batch["std"].to(device).float()
                    x0 = (mean + std * torch.randn(mean.shape, generator=g).to(device)) * scale
                    return x0, None if clap is None else clap.drop(batch["clap"].to(device), g)
                b, s = stems.shape[:2]
                z = posterior_sample(vae.encode(stem_mels(front, stems, frames)).latent_dist, g)
                x0 = (z * scale).reshape(b, s, *z.shape[1:])
                return x0, None if clap is None else clap.embed(stems.sum(1), g)

        def loss_fn(model, stems, g, batch):
            x0, cond = latents(stems, batch, g)
            b = x0.shape[0]
            t = torch.randint(0, len(alphas), (b,), generator=g).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            a = alphas.to(device)[t].view(b, 1, 1, 1, 1)
            if not arrangement:
                return F.mse_loss(model(q_sample(x0, a, noise), t, cond).float(), noise), {}
            mask = arrangement_masks(x0.shape, cfg.unet.given_fraction, cfg.unet.prefix_fraction, g).to(x0)
            eps = model(q_sample(x0, a, noise), t, cond, given=(x0, mask))
            unknown = 1 - mask.expand_as(x0)  # the given parts' noise is computable from the input: not learnt
            return ((eps.float() - noise) ** 2 * unknown).sum() / unknown.sum().clamp(min=1), {}

        def export(step):
            m = self.acc.unwrap_model(unet)
            with ema_weights(ema, m):
                save_component(lambda p: m.save_pretrained(p), self.out / "unet")
                write_pipeline(self.cfg, self.out)
                self.validation.unet(m, vae, clap, step)

        self.trainer.loop("unet", unet, cfg.unet, loss_fn, ema=ema, data=cache, on_save=export, resume=resume)

    def _latent_cache(self, vae, clap: Optional[MixClap]) -> LatentCache:
        """The training windows on the grid, encoded once (training/latents/, built or completed here)."""
        acc, stride = self.acc, self.cfg.unet.cache_stride_frames
        assert stride is not None
        report = self.trainer.progress if acc.is_main_process else None
        return LatentCache.build(
            self.out / "training" / "latents", self.data, vae, self.front, audio=self.cfg.audio, frames=self.frames,
            stride=stride, vae_folder=self.out / "vae", clap=None if clap is None else clap.audio,
            clap_folder=clap_source(self.cfg, self.out), rank=acc.process_index, world=acc.num_processes,
            barrier=acc.wait_for_everyone,
            progress=None if report is None else lambda i, n: report({"i": i - 1, "total": n, "stage": "latents"}))

    def _frozen_vae(self):
        from diffusers import AutoencoderKL

        if not (self.out / "vae" / "config.json").is_file():
            raise InputError(f"{self.out}: has no trained VAE", "train the vae stage first ({stages})",
                             stages="vae")
        return AutoencoderKL.from_pretrained(self.out / "vae").to(self.acc.device).eval().requires_grad_(False)

    def _clap(self) -> Optional[MixClap]:
        u = self.cfg.unet
        folder = clap_source(self.cfg, self.out)
        if folder is None:
            return None
        if not (folder / "config.json").is_file() and u.clap is None:
            raise InputError(f"{self.out}: has no trained CLAP", "train the clap stage first ({stages})", stages="clap")
        clap = MixClap(folder, self.cfg.audio.sample_rate, u.null_fraction, self.acc.device)
        if u.unet.cond_dim != clap.dim:
            raise InputError(f"unet.unet.cond_dim ({u.unet.cond_dim}) is not the CLAP embedding size ({clap.dim})",
                             f"set cond_dim: {clap.dim}")
        return clap

    @torch.no_grad()
    def _scale_by_std(self, vae, cache: Optional[LatentCache]) -> None:
        """LDM's scale_by_std: 1 / std of the first batch's latents, stored as the VAE's scaling factor."""
        data = self.data if cache is None else cache
        batch = next(iter(StepBatches(len(data), self.cfg.unet.batch_size, self.cfg.seed, 1, 0, 1)))
        g = step_generator(self.cfg.seed, STAGES.index("unet"), 0, 0)  # the same on every process
        if cache is None:
            stems = torch.stack([self.data[i]["stems"] for i in batch]).to(self.acc.device)
            z = posterior_sample(vae.encode(stem_mels(self.front, stems, self.frames)).latent_dist, g)
        else:
            items = [cache[i] for i in batch]
            mean, std = (torch.stack([it[k] for it in items]).float() for k in ("mean", "std"))
            z = mean + std * torch.randn(mean.shape, generator=g)
        vae.register_to_config(scaling_factor=float(1.0 / z.flatten().std()))
        if self.acc.is_main_process:
            save_component(lambda p: vae.save_pretrained(p), self.out / "vae")
        self.acc.wait_for_everyone()


def arrangement_masks(shape: tuple[int, ...], given_fraction: float, prefix_fraction: float,
                      g: torch.Generator) -> torch.Tensor:
    """``[B, S, 1, T, 1]`` masks (1 = known) for arrangement training: some items are given a random
    non-empty proper subset of the stems, some also know every stem's first frames (a window's overlap)."""
    b, s, _, frames, _ = shape
    mask = torch.zeros(b, s, 1, frames, 1)
    subsets = torch.randint(1, 2**s - 1, (b,), generator=g)
    given = torch.rand(b, generator=g) < given_fraction
    prefix = torch.rand(b, generator=g) < prefix_fraction
    cut = torch.randint(1, max(2, frames // 2 + 1), (b,), generator=g)
    for i in range(b):
        if given[i]:
            bits = [(int(subsets[i]) >> k) & 1 for k in range(s)]
            mask[i, :, 0, :, 0] = torch.tensor(bits, dtype=mask.dtype)[:, None]
        if prefix[i]:
            mask[i, :, 0, : int(cut[i]), 0] = 1.0
    return mask


class VocoderStage(Stage):
    """A Vocos or HiFi-GAN on the true log-mels, with discriminators if the config names them; kept
    as vocoder/ as the config and validation say."""

    def run(self, *, resume: bool = True) -> None:
        cfg, v = self.cfg, self.cfg.vocoder
        if v.kind == "griffin-lim":
            return
        if v.fallback and self.val is None:
            raise InputError("vocoder.fallback compares with Griffin-Lim on data.validation, which is not set",
                             "set data.validation, or vocoder.fallback: false")
        torch.manual_seed(cfg.seed)
        voc = build_vocoder(cfg)
        front, hop, n = self.front, cfg.audio.hop_length, v.window_frames

        def clips_of(stems, g):
            """One window of every sounding stem: the same draws for the discriminators' step and the model's."""
            clips = stems.reshape(-1, stems.shape[-1])
            start = torch.randint(0, clips.shape[-1] - n * hop + 1, (len(clips),), generator=g)
            clips = torch.stack([c[o:o + n * hop] for c, o in zip(clips, start.tolist())])
            active = clips.abs().mean(-1) >= 1e-3
            return clips[active] if active.any() else clips

        def loss_fn(model, stems, g, disc=None, **_):
            clips = clips_of(stems, g)
            loss, wav, parts = vocoder_reconstruction_loss(v, front, model, self.acc.unwrap_model(model), clips)
            if disc is not None:
                loss = loss + v.adversarial_weight * disc(clips, wav).generator_loss()
            return loss, parts

        def disc_loss(model, disc, stems, g):
            clips = clips_of(stems, g)
            with torch.no_grad():
                wav = model(front(clips, n))[..., :clips.shape[-1]]
            return disc(clips, wav.detach()).discriminator_loss()

        adversary = None
        if v.discriminators:
            adversary = Adversary(Discriminators(v.discriminators, v.mrd_fft_sizes), disc_loss, v.adversarial_start)

        def export(step):
            m = self.acc.unwrap_model(voc)
            save_component(lambda p: m.save_pretrained(p), self.out / "training" / "vocoder-trained")
            self.validation.vocoder(m, step)

        self.trainer.loop("vocoder", voc, v, loss_fn, adversary=adversary, on_save=export, resume=resume)
        if self.acc.is_main_process:
            self.choose()
        self.acc.wait_for_everyone()

    def choose(self) -> None:
        """Keep the trained vocoder as vocoder/, unless ``fallback`` and Griffin-Lim measured better."""
        v = self.cfg.vocoder
        scores = read_validation(self.out / "training" / "validation.csv", "vocoder")
        chosen = v.kind
        if v.fallback and not scores.get("mrstft_vocoder", math.inf) < scores.get("mrstft_griffin_lim", 0):
            chosen = "griffin-lim"
        if chosen != "griffin-lim":
            save_component(lambda p: shutil.copytree(self.out / "training" / "vocoder-trained", p, dirs_exist_ok=True),
                           self.out / "vocoder")
        else:
            shutil.rmtree(self.out / "vocoder", ignore_errors=True)
        atomic_write_text(self.out / "training" / "vocoder.json",
                          json.dumps({"kind": v.kind, "fallback": v.fallback, "chosen": chosen, **scores}, indent=2))
        if (self.out / "unet" / "config.json").is_file():
            write_pipeline(self.cfg, self.out)


def vocoder_reconstruction_loss(v, front, model, module, clips: torch.Tensor, resolutions=None):
    """The vocoder stage's loss without its GAN terms, on ``clips`` ``[K, window_frames * hop]``:
    ``mrstft_weight`` x MR-STFT (at ``resolutions``, default the metric's) + ``mel_weight`` x log-mel
    L1 + ``phase_weight`` x the phase losses of ``module`` (``model`` unwrapped). Returns the loss,
    the audio and the logged parts (benchmarks/vocoder_attacks.py fine-tunes with it too)."""
    n = v.window_frames
    mel = front(clips, n)
    parts = {}
    if v.phase_weight:
        wav, spec = model(mel, with_spectrum=True)
        parts["phase"] = anti_wrapped_phase_loss(spec, module.target_spectrum(clips), absolute=v.phase == "absolute")
    else:
        wav = model(mel)
    wav = wav[..., :clips.shape[-1]]
    mel_l1 = (front(wav, n) - mel).abs().mean()
    loss = v.mrstft_weight * mrstft(wav, clips, resolutions) + v.mel_weight * mel_l1 + v.phase_weight * parts.get("phase", 0.0)
    return loss, wav, {"l1": mel_l1, **parts}


class Discriminators(torch.nn.Module):
    """The named GAN discriminators (the ``vocos`` package's), judging a real and a generated batch."""

    def __init__(self, kinds, mrd_fft_sizes):
        super().__init__()
        from vocos.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator

        from ..vocoders import compact_buffers

        make = {"mpd": MultiPeriodDiscriminator, "mrd": lambda: MultiResolutionDiscriminator(fft_sizes=tuple(mrd_fft_sizes))}
        self.judges = torch.nn.ModuleDict({k: make[k]() for k in kinds})
        compact_buffers(self)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> Verdicts:
        return Verdicts([judge(real, fake) for judge in self.judges.values()])


class Verdicts:
    """What each discriminator said; the losses are Vocos' (least squares, L1 feature matching), each
    averaged over its sub-discriminators."""

    def __init__(self, outputs):
        self.outputs = outputs

    def discriminator_loss(self) -> torch.Tensor:
        from vocos.loss import DiscriminatorLoss

        losses = []
        for real, fake, _, _ in self.outputs:
            loss, per_real, _ = DiscriminatorLoss()(real, fake)
            losses.append(loss / len(per_real))
        return torch.stack(losses).sum()

    def generator_loss(self) -> torch.Tensor:
        from vocos.loss import FeatureMatchingLoss, GeneratorLoss

        losses = []
        for _, fake, fmap_real, fmap_fake in self.outputs:
            adv, per = GeneratorLoss()(fake)
            losses.append(adv / len(per) + FeatureMatchingLoss()(fmap_real, fmap_fake) / len(fmap_real))
        return torch.stack(losses).sum()


class ClapStage(Stage):
    """Our own CLAP, trained contrastively (CLIP's symmetric InfoNCE) on (mix of a window, caption)."""

    def run(self, *, resume: bool = True) -> None:
        from transformers import ClapModel

        from ..components import quiet_libraries

        c = self.cfg.clap
        if c is None:
            return
        quiet_libraries()
        processor = build_clap_processor(self.cfg)
        torch.manual_seed(self.cfg.seed)
        model = ClapModel(clap_config(self.cfg, len(processor.tokenizer)))
        data = self.trainer.dataset(self.cfg.data.train, c.seconds)
        metas = track_metas(data)
        rate, n = self.cfg.audio.sample_rate, round(c.seconds * self.cfg.audio.sample_rate)

        def loss_fn(model, stems, g, batch):
            import random

            from ..data.captions import caption

            rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=g)))
            texts = [caption(metas[name], float(start), c.seconds, rng) for name, start in zip(batch["track"], batch["start"])]
            inputs = clap_inputs(processor, texts, stems.sum(1)[:, :n], rate).to(stems.device)
            out = model(**inputs, return_loss=True)
            hits = (out.logits_per_text.argmax(-1) == torch.arange(len(texts), device=stems.device)).float().mean()
            return out.loss, {"accuracy": hits}

        def export(step):
            m = self.acc.unwrap_model(model)

            def save(folder):
                m.save_pretrained(folder)
                processor.save_pretrained(folder)

            save_component(save, self.out / "clap")
            self.validation.clap(m, processor, step)

        self.trainer.loop("clap", model, c, loss_fn, data=data, on_save=export, resume=resume)


def write_pipeline(cfg: TrainConfig, out: Path) -> None:
    """pipeline.json and the scheduler: the output folder loads as a model from the first UNet save."""
    vocoder = "griffin-lim"
    chosen = out / "training" / "vocoder.json"
    if chosen.is_file() and (out / "vocoder").is_dir():
        vocoder = json.loads(chosen.read_text())["chosen"]
    clap: dict = {"conditioning": "none"}
    clap_folder = clap_source(cfg, out)
    if clap_folder is not None:
        if not (out / "clap").is_dir():
            save_component(lambda p: shutil.copytree(clap_folder, p, dirs_exist_ok=True), out / "clap")
        c = MixClap.rates(clap_folder)
        clap = dict(conditioning="clap", clap_sample_rate=c[0], clap_max_seconds=c[1])
    pipe = PipelineConfig.model_validate(dict(name=cfg.name, description=cfg.description, audio=cfg.audio,
                                              vocoder=vocoder, sampling=cfg.sampling, **clap))
    atomic_write_text(out / "pipeline.json", pipe.model_dump_json(indent=2))
    from ..samplers import training_scheduler

    save_component(lambda p: training_scheduler().save_pretrained(p), out / "scheduler")


def clap_source(cfg: TrainConfig, out: Path) -> Optional[Path]:
    """The CLAP the UNet is conditioned on: unet.clap, else this run's own clap stage, else none."""
    if cfg.unet.clap is not None:
        return cfg.unet.clap
    return out / "clap" if cfg.clap is not None else None


class MixClap:
    """A frozen CLAP for conditioning: the mix's audio embedding, the null one for a fraction."""

    def __init__(self, folder: Path, sample_rate: int, null_fraction: float, device):
        from transformers import ClapModel, ClapProcessor

        try:
            self.model = ClapModel.from_pretrained(folder).to(device).eval().requires_grad_(False)
            self.processor = ClapProcessor.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise InputError(f"unet.clap {folder}: not a CLAP folder ({str(e).splitlines()[0]})",
                             "give a folder with a transformers ClapModel and ClapProcessor (a model's clap/)") from None
        self.sample_rate, self.null_fraction = sample_rate, null_fraction
        self.clap_rate, self.max_seconds = self.rates(folder, self.processor)
        from ..conditioning import clap_text_embedding

        self.null = clap_text_embedding(self.model, self.processor, [""])
        self.dim = self.null.shape[-1]

    @staticmethod
    def rates(folder: Path, processor=None) -> tuple[int, float]:
        """(sampling rate, longest clip in seconds) of a CLAP's feature extractor."""
        if processor is None:
            from transformers import ClapProcessor

            processor = ClapProcessor.from_pretrained(folder)
        fe = processor.feature_extractor
        return int(fe.sampling_rate), fe.nb_max_samples / fe.sampling_rate

    def audio(self, mix: torch.Tensor) -> torch.Tensor:
        """The CLAP audio embeddings ``[B, D]`` of ``[B, N]`` mixes."""
        from ..conditioning import clap_audio_embedding

        return clap_audio_embedding(self.model, self.processor, mix, self.sample_rate, self.clap_rate, self.max_seconds)

    def drop(self, emb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``emb`` with the null embedding in place of a ``null_fraction`` of the items (for guidance)."""
        drop = (torch.rand(len(emb), generator=g) < self.null_fraction).to(emb.device)
        return torch.where(drop[:, None], self.null.to(emb.device), emb)

    def embed(self, mix: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.drop(self.audio(mix), g)



def build_vocoder(cfg: TrainConfig):
    v = cfg.vocoder
    if v.kind == "vocos":
        from ..vocoders import VocosConfig, VocosVocoder

        return VocosVocoder(VocosConfig(n_mels=cfg.audio.n_mels, dim=v.dim, intermediate_dim=v.intermediate_dim,
                                        num_layers=v.num_layers, n_fft=cfg.audio.n_fft, hop_length=cfg.audio.hop_length,
                                        phase=v.phase, magnitude=v.magnitude, sample_rate=cfg.audio.sample_rate,
                                        f_min=cfg.audio.f_min, f_max=cfg.audio.f_max, log_clamp=cfg.audio.log_clamp))
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    return SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=cfg.audio.n_mels, sampling_rate=cfg.audio.sample_rate,
        upsample_initial_channel=v.upsample_initial_channel, upsample_rates=list(v.upsample_rates),
        upsample_kernel_sizes=[2 * r for r in v.upsample_rates], resblock_kernel_sizes=list(v.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in v.resblock_dilation_sizes], normalize_before=False))


class ema_weights:
    """Swap the EMA weights into a model for the duration of a ``with`` block."""

    def __init__(self, ema, model):
        self.ema, self.model = ema, model

    def __enter__(self):
        self.ema.store(self.model.parameters())
        self.ema.copy_to(self.model.parameters())

    def __exit__(self, *exc):
        self.ema.restore(self.model.parameters())

