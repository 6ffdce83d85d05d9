"""Training: the VAE on per-stem log-mels, the multi-track UNet on the frozen VAE's latents
(unconditional or CLAP-conditioned), and optionally a HiFi-GAN vocoder on the log-mels.

One config file (YAML or TOML, validated by pydantic) describes the model and the run. Stages write
into one output folder that is a model folder in the registry's layout the moment a stage has
saved (``--model OUT`` loads it), plus ``training/`` with the resumable state of each stage, a CSV
log of the losses, an SVG plot of them, and what validation measured (and sampled) at each save.

Runs on a CPU, one GPU, or many through ``accelerate launch``. Every step's batch and noise are
drawn from (seed, stage, step, process), so a run resumed from its last save makes exactly the
steps, and the weights, that an uninterrupted run makes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .audio import atomic_write_text, is_silent, staged_dir
from .config import AudioConfig, PipelineConfig, SamplingDefaults
from .errors import InputError
from .model import UNetConfig

STAGES = ("vae", "unet", "vocoder")  # run in this order; a stage's index seeds its random streams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train: Path
    validation: Optional[Path] = None
    layout: Literal["auto", "stems", "slakh"] = "auto"
    stem_map: dict[str, list[str]] = Field(default_factory=dict)
    num_workers: int = 0
    # Training windows may be shorter than the model's segment (the UNet is convolutional, and
    # attends over whatever length it is given): cheaper steps for a CPU-trained model.
    window_frames: Optional[int] = Field(None, ge=8)


class Optim(_Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    grad_clip: float = 1.0


class VAETrain(Optim):
    """AudioLDM's VAE objective without its perceptual and adversarial terms: L1 + KL."""

    latent_channels: int = 8
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    kl_weight: float = 1e-6


class UNetTrain(Optim):
    unet: UNetConfig = Field(default_factory=lambda: UNetConfig(cond_dim=None))
    lr: float = Field(3e-5, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # A folder with a transformers CLAP (ClapModel + ClapProcessor), e.g. a model folder's clap/:
    # the UNet is then conditioned on the CLAP audio embedding of each window's mix, replaced by the
    # null embedding (CLAP of the empty text) for a null_fraction of the items, for guidance.
    clap: Optional[Path] = None
    null_fraction: float = Field(0.1, ge=0, le=1)


class VocoderTrain(Optim):
    """A HiFi-GAN generator (transformers' SpeechT5HifiGan) on ground-truth log-mels, trained with a
    multi-resolution STFT + log-mel L1 loss and no discriminator (a CPU-sized recipe).

    kind: griffin-lim (no stage), hifigan (train and use it), or auto (train it, and keep it only if
    it beats Griffin-Lim on the validation split's multi-resolution STFT distance).
    """

    kind: Literal["griffin-lim", "hifigan", "auto"] = "griffin-lim"
    steps: int = Field(2000, ge=1)
    lr: float = Field(2e-4, gt=0)
    window_frames: int = Field(32, ge=4)
    upsample_initial_channel: int = 64
    upsample_rates: tuple[int, ...] = (4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    mel_weight: float = 1.0


class ValidationConfig(_Strict):
    """What each save measures on data.validation (skipped when that is not set)."""

    items: int = Field(8, ge=1)  # windows, spread over the split
    samples: int = Field(1, ge=0)  # clips the UNet stage samples (EMA weights) into training/samples/
    sample_steps: int = Field(25, ge=1)


class TrainConfig(_Strict):
    name: str
    description: str = ""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    data: DataConfig
    vae: VAETrain = Field(default_factory=VAETrain)
    unet: UNetTrain = Field(default_factory=UNetTrain)
    vocoder: VocoderTrain = Field(default_factory=VocoderTrain)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _frames_fit(self):
        step = 2 ** (len(self.vae.block_out_channels) - 1) * self.unet.unet.downsample_factor
        for name, frames in (("audio.segment_frames", self.audio.segment_frames), ("data.window_frames", self.data.window_frames)):
            if frames is not None and frames % step:
                raise ValueError(f"{name} ({frames}) must be a multiple of {step} (VAE x UNet downsampling)")
        if self.vocoder.kind != "griffin-lim" and math.prod(self.vocoder.upsample_rates) != self.audio.hop_length:
            raise ValueError(f"vocoder.upsample_rates multiply to {math.prod(self.vocoder.upsample_rates)}, "
                             f"not audio.hop_length ({self.audio.hop_length})")
        if (self.unet.unet.cond_dim is None) != (self.unet.clap is None):
            raise ValueError("unet.unet.cond_dim and unet.clap go together: set both (CLAP-conditioned) or neither")
        if len(self.vocoder.resblock_kernel_sizes) != len(self.vocoder.resblock_dilation_sizes):
            raise ValueError("vocoder.resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        return self


def load_config(path: os.PathLike) -> TrainConfig:
    """Read a YAML or TOML training config; any mistake is one line that names the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file", "give a .yaml or .toml training config")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            raw = tomllib.loads(path.read_text())
        else:
            import yaml

            raw = yaml.safe_load(path.read_text())
    except Exception as e:  # yaml and tomllib raise their own error types
        raise InputError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'} "
                         f"({str(e).splitlines()[0]})", "fix the syntax") from None
    try:
        cfg = TrainConfig.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(f"{path}: {where}: {err['msg']}", f"{e.error_count()} problem(s); see docs/training.md") from None
    base = path.parent
    data = cfg.data.model_copy(update={k: (base / v if v is not None and not Path(v).is_absolute() else v)
                                       for k, v in (("train", cfg.data.train), ("validation", cfg.data.validation))})
    return cfg.model_copy(update={"data": data})


# ----- the step-indexed data order ---------------------------------------------------------------

class StepBatches:
    """Batch sampler: the items of step k depend only on (seed, stage, k), and each process takes
    its own share; starting at any step gives the same stream as getting there."""

    def __init__(self, items: int, batch: int, seed: int, stage: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        self.items, self.batch, self.seed, self.stage = items, batch, seed, stage
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list]:
        per_epoch = max(1, self.items // (self.batch * self.world))
        for step in range(self.start, self.stop):
            epoch, k = divmod(step, per_epoch)
            order = np.random.default_rng((self.seed, self.stage, epoch)).permutation(self.items)
            order = np.resize(order, per_epoch * self.batch * self.world)  # wraps a dataset smaller than a step
            take = order[(k * self.world + self.rank) * self.batch:][: self.batch]
            yield [(int(i), epoch) for i in take]


def saved_step(state: Path) -> int:
    """The step a stage's resumable state was saved at (0: none)."""
    try:
        return int(json.loads((state / "step.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def step_generator(seed: int, stage: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence((seed, stage, step, rank)).generate_state(1)[0]))


# ----- stages ------------------------------------------------------------------------------------

def _mels(front, stems: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B, S, N]`` -> ``[B*S, 1, frames, n_mels]`` log-mels, one per stem."""
    b, s, n = stems.shape
    return front(stems.reshape(b * s, n), frames)[:, None]


def _sample(posterior, g: torch.Generator) -> torch.Tensor:
    """A draw from the VAE posterior with noise from ``g`` (made on the CPU: the same on any device)."""
    return posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(posterior.mean.device)


def build_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL

    v = cfg.vae
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=v.latent_channels, block_out_channels=v.block_out_channels,
        layers_per_block=v.layers_per_block, down_block_types=("DownEncoderBlock2D",) * len(v.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(v.block_out_channels), norm_num_groups=v.norm_groups,
        sample_size=cfg.audio.segment_frames)


class _VAEObjective(torch.nn.Module):
    """The VAE and its loss in one forward, so DistributedDataParallel sees (and syncs) all of it."""

    def __init__(self, vae, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, mel: torch.Tensor, g: torch.Generator):
        post = self.vae.encode(mel).latent_dist
        rec = self.vae.decode(_sample(post, g)).sample
        l1 = (rec - mel).abs().mean()
        kl = post.kl().mean() / mel[0].numel()
        return l1 + self.kl_weight * kl, l1, kl


class Trainer:
    """Runs the stages of one config into one output folder."""

    def __init__(self, cfg: TrainConfig, out: os.PathLike, *, cpu: bool = False,
                 progress: Optional[Callable[[dict], None]] = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from .audio import MelFrontEnd
        from .data.datasets import StemDataset

        self.cfg, self.out, self.progress = cfg, Path(out), progress
        # Without a GPU, accelerate needs cpu=True to see a multi-process launch (else each process runs alone).
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu or not torch.cuda.is_available())
        set_seed(cfg.seed)
        self.front = MelFrontEnd(cfg.audio)
        self.frames = cfg.data.window_frames or cfg.audio.segment_frames
        self.data = StemDataset(cfg.data.train, stems=cfg.audio.stems, sample_rate=cfg.audio.sample_rate,
                                segment_seconds=self.frames * cfg.audio.hop_length / cfg.audio.sample_rate,
                                layout=cfg.data.layout, stem_map=cfg.data.stem_map or None, seed=cfg.seed)
        self.val = None if cfg.data.validation is None else StemDataset(
            cfg.data.validation, stems=cfg.audio.stems, sample_rate=cfg.audio.sample_rate,
            segment_seconds=self.data.segment_seconds, layout=cfg.data.layout,
            stem_map=cfg.data.stem_map or None, seed=cfg.seed)
        self._val_cache: dict = {}
        if self.acc.is_main_process:
            (self.out / "training").mkdir(parents=True, exist_ok=True)
            (self.out / "training" / "config.json").write_text(cfg.model_dump_json(indent=2))

    # -- the loop shared by every stage --------------------------------------------------------
    def _loop(self, stage: str, model: torch.nn.Module, opt_cfg: Optim, loss_fn, *, ema=None,
              on_save: Callable[[int], None], resume: bool) -> int:
        acc, cfg = self.acc, self.cfg
        sid = STAGES.index(stage)
        state = self.out / "training" / stage
        start = saved_step(state) if resume else 0
        if start >= opt_cfg.steps:
            return start
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=opt_cfg.lr)
        model, opt = acc.prepare(model, opt)
        if ema is not None:
            acc.register_for_checkpointing(ema)
        if start:
            acc.load_state(str(state))
        from torch.utils.data import DataLoader

        batches = StepBatches(len(self.data), opt_cfg.batch_size, cfg.seed, sid, start, opt_cfg.steps,
                              acc.process_index, acc.num_processes)
        loader = DataLoader(self.data, batch_sampler=batches, num_workers=cfg.data.num_workers)
        log = _Log(self.out / "training" / "log.csv", enabled=acc.is_main_process)
        model.train()
        started = time.perf_counter()
        for step, batch in zip(range(start, opt_cfg.steps), loader):
            g = step_generator(cfg.seed, sid, step, acc.process_index)
            with acc.autocast():
                loss, parts = loss_fn(model, batch["stems"].to(acc.device), g)
            acc.backward(loss)
            if opt_cfg.grad_clip:
                acc.clip_grad_norm_(params, opt_cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(acc.unwrap_model(model).parameters())
            done = step + 1
            if done % cfg.log_every == 0 or done == opt_cfg.steps:
                values = {k: float(acc.reduce(v.detach().float(), "mean")) for k, v in {"loss": loss, **parts}.items()}
                log.write(stage, done, values, time.perf_counter() - started)
            if self.progress and acc.is_main_process:
                self.progress({"i": step, "total": opt_cfg.steps, "stage": stage, "loss": float(loss.detach())})
            if done % cfg.save_every == 0 or done == opt_cfg.steps:
                self._save(state, done, on_save)
        model.eval()
        acc.free_memory()  # the next stage prepares (and checkpoints) only its own model...
        acc._custom_objects.clear()  # ...and not this stage's EMA (accelerate has no public unregister)
        return opt_cfg.steps

    def _save(self, state: Path, step: int, export: Callable[[int], None]) -> None:
        """Resumable state first, then the step that names it, then the loadable model and its
        validation (which draws only from its own random streams, so resuming stays exact)."""
        self.acc.wait_for_everyone()
        self.acc.save_state(str(state))
        if self.acc.is_main_process:
            atomic_write_text(state / "step.json", json.dumps({"step": step}))
            with torch.random.fork_rng(devices=[]):
                export(step)
            plot_losses(self.out / "training" / "log.csv", self.out / "training" / "loss.svg")
        self.acc.wait_for_everyone()

    # -- VAE -----------------------------------------------------------------------------------
    def train_vae(self, *, resume: bool = True) -> None:
        cfg = self.cfg
        vae = _VAEObjective(build_vae(cfg), cfg.vae.kl_weight)
        front, frames = self.front, self.frames

        def loss_fn(model, stems, g):
            loss, l1, kl = model(_mels(front, stems, frames), g)
            return loss, {"l1": l1, "kl": kl}

        def export(step):
            m = self.acc.unwrap_model(vae).vae
            _save_component(lambda p: m.save_pretrained(p), self.out / "vae")
            self._validate_vae(m, step)

        self._loop("vae", vae, cfg.vae, loss_fn, on_save=export, resume=resume)

    # -- UNet ----------------------------------------------------------------------------------
    def train_unet(self, *, resume: bool = True) -> None:
        from diffusers.training_utils import EMAModel

        from .model import MultiTrackUNet
        from .samplers import q_sample, training_scheduler

        cfg = self.cfg
        vae = self._frozen_vae()
        if cfg.unet.unet.stems != len(cfg.audio.stems) or cfg.unet.unet.latent_channels != vae.config.latent_channels:
            raise InputError("unet.unet.stems / latent_channels do not match audio.stems / the VAE's latent channels")
        clap = self._clap()
        if not (resume and saved_step(self.out / "training" / "unet")):
            self._scale_by_std(vae)
        scale = vae.config.scaling_factor
        torch.manual_seed(cfg.seed)
        unet = MultiTrackUNet(cfg.unet.unet)
        ema = EMAModel(unet.parameters(), decay=cfg.unet.ema_decay)
        ema.to(self.acc.device)
        alphas = training_scheduler().alphas_cumprod
        front, frames = self.front, self.frames

        def loss_fn(model, stems, g):
            b, s = stems.shape[:2]
            with torch.no_grad():
                z = _sample(vae.encode(_mels(front, stems, frames)).latent_dist, g)
                x0 = (z * scale).reshape(b, s, *z.shape[1:])
                cond = None if clap is None else clap.embed(stems.sum(1), g)
            t = torch.randint(0, len(alphas), (b,), generator=g).to(stems.device)
            noise = torch.randn(x0.shape, generator=g).to(stems.device)
            a = alphas.to(stems.device)[t].view(b, 1, 1, 1, 1)
            eps = model(q_sample(x0, a, noise), t, cond)
            return F.mse_loss(eps.float(), noise), {}

        def export(step):
            m = self.acc.unwrap_model(unet)
            with _ema_weights(ema, m):
                _save_component(lambda p: m.save_pretrained(p), self.out / "unet")
                self._write_pipeline()
                self._validate_unet(m, vae, clap, step)

        self._loop("unet", unet, cfg.unet, loss_fn, ema=ema, on_save=export, resume=resume)

    def _frozen_vae(self):
        from diffusers import AutoencoderKL

        if not (self.out / "vae" / "config.json").is_file():
            raise InputError(f"{self.out}: has no trained VAE", "train the vae stage first (--stage vae)")
        return AutoencoderKL.from_pretrained(self.out / "vae").to(self.acc.device).eval().requires_grad_(False)

    def _clap(self) -> Optional["_Clap"]:
        u = self.cfg.unet
        if u.clap is None:
            return None
        clap = _Clap(u.clap, self.cfg.audio.sample_rate, u.null_fraction, self.acc.device)
        if u.unet.cond_dim != clap.dim:
            raise InputError(f"unet.unet.cond_dim ({u.unet.cond_dim}) is not the CLAP embedding size ({clap.dim})",
                             f"set cond_dim: {clap.dim}")
        return clap

    @torch.no_grad()
    def _scale_by_std(self, vae) -> None:
        """LDM's scale_by_std: 1 / std of the first batch's latents, stored as the VAE's scaling factor."""
        batch = next(iter(StepBatches(len(self.data), self.cfg.unet.batch_size, self.cfg.seed, 1, 0, 1)))
        stems = torch.stack([self.data[i]["stems"] for i in batch]).to(self.acc.device)
        post = vae.encode(_mels(self.front, stems, self.frames)).latent_dist
        z = _sample(post, step_generator(self.cfg.seed, STAGES.index("unet"), 0, 0))  # the same on every process
        vae.register_to_config(scaling_factor=float(1.0 / z.flatten().std()))
        if self.acc.is_main_process:
            _save_component(lambda p: vae.save_pretrained(p), self.out / "vae")
        self.acc.wait_for_everyone()

    # -- vocoder -------------------------------------------------------------------------------
    def train_vocoder(self, *, resume: bool = True) -> None:
        cfg, v = self.cfg, self.cfg.vocoder
        if v.kind == "griffin-lim":
            return
        if v.kind == "auto" and self.val is None:
            raise InputError("vocoder.kind auto compares with Griffin-Lim on data.validation, which is not set",
                             "set data.validation, or vocoder.kind: hifigan")
        torch.manual_seed(cfg.seed)
        voc = build_vocoder(cfg)
        front, hop, n = self.front, cfg.audio.hop_length, v.window_frames

        def loss_fn(model, stems, g):
            clips = stems.reshape(-1, stems.shape[-1])
            start = torch.randint(0, clips.shape[-1] - n * hop + 1, (len(clips),), generator=g)
            clips = torch.stack([c[o:o + n * hop] for c, o in zip(clips, start.tolist())])
            active = clips.abs().mean(-1) >= 1e-3
            clips = clips[active] if active.any() else clips
            mel = front(clips, n)
            wav = model(mel)
            mel_l1 = (front(wav, n) - mel).abs().mean()
            return _mrstft(wav, clips) + v.mel_weight * mel_l1, {"l1": mel_l1}

        def export(step):
            m = self.acc.unwrap_model(voc)
            _save_component(lambda p: m.save_pretrained(p), self.out / "training" / "vocoder-hifigan")
            self._validate_vocoder(m, step)

        self._loop("vocoder", voc, v, loss_fn, on_save=export, resume=resume)
        if self.acc.is_main_process:
            self._choose_vocoder()
        self.acc.wait_for_everyone()

    def _choose_vocoder(self) -> None:
        """Keep the trained HiFi-GAN (kind hifigan, or auto when it beats Griffin-Lim) as vocoder/."""
        kind = self.cfg.vocoder.kind
        scores = self._read_validation("vocoder")
        chosen = "hifigan"
        if kind == "auto":
            chosen = "hifigan" if scores.get("mrstft_hifigan", math.inf) < scores.get("mrstft_griffin_lim", 0) else "griffin-lim"
        if chosen == "hifigan":
            _save_component(lambda p: shutil.copytree(self.out / "training" / "vocoder-hifigan", p, dirs_exist_ok=True),
                            self.out / "vocoder")
        else:
            shutil.rmtree(self.out / "vocoder", ignore_errors=True)
        atomic_write_text(self.out / "training" / "vocoder.json", json.dumps({"kind": kind, "chosen": chosen, **scores}, indent=2))
        if (self.out / "unet" / "config.json").is_file():
            self._write_pipeline()

    def _write_pipeline(self) -> None:
        cfg = self.cfg
        vocoder = "griffin-lim"
        chosen = self.out / "training" / "vocoder.json"
        if chosen.is_file() and (self.out / "vocoder").is_dir():
            vocoder = json.loads(chosen.read_text())["chosen"]
        clap = {}
        if cfg.unet.clap is not None:
            if not (self.out / "clap").is_dir():
                _save_component(lambda p: shutil.copytree(cfg.unet.clap, p, dirs_exist_ok=True), self.out / "clap")
            c = _Clap.rates(cfg.unet.clap)
            clap = dict(conditioning="clap", clap_sample_rate=c[0], clap_max_seconds=c[1])
        pipe = PipelineConfig(name=cfg.name, description=cfg.description, audio=cfg.audio,
                              **({"conditioning": "none"} | clap), vocoder=vocoder, sampling=cfg.sampling)
        atomic_write_text(self.out / "pipeline.json", pipe.model_dump_json(indent=2))
        from .samplers import training_scheduler

        _save_component(lambda p: training_scheduler().save_pretrained(p), self.out / "scheduler")

    # -- validation (main process, at every save) ----------------------------------------------
    def _val_stems(self) -> Optional[torch.Tensor]:
        """``[K, S, N]``: the same windows at every save, spread over the validation split."""
        if self.val is None:
            return None
        if "stems" not in self._val_cache:
            idx = np.unique(np.linspace(0, len(self.val) - 1, self.cfg.validation.items).round().astype(int))
            self._val_cache["stems"] = torch.stack([self.val[(int(i), 0)]["stems"] for i in idx])
        return self._val_cache["stems"].to(self.acc.device)

    def _val_clips(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Validation stems as ``[K*S, N]`` clips and their log-mels, silent stems left out."""
        stems = self._val_stems()
        if stems is None:
            return None
        clips = stems.reshape(-1, stems.shape[-1])
        clips = clips[[not is_silent(c) for c in clips]]
        return clips, self.front(clips, self.frames)

    def _griffin_lim(self, mel: torch.Tensor) -> torch.Tensor:
        from .audio import griffin_lim_vocoder

        if "gl" not in self._val_cache:
            self._val_cache["gl"] = griffin_lim_vocoder(self.cfg.audio).to(mel.device)
        return self._val_cache["gl"](mel)

    @torch.no_grad()
    def _validate_vae(self, vae, step: int) -> None:
        got = self._val_clips()
        if got is None:
            return
        clips, mel = got
        rec = vae.decode(vae.encode(mel[:, None]).latent_dist.mode()).sample[:, 0]
        wav = self._griffin_lim(rec)
        self._write_validation("vae", step, {"mel_l1": float((rec - mel).abs().mean()),
                                             "mrstft_griffin_lim": float(_mrstft(wav, clips))})

    @torch.no_grad()
    def _validate_vocoder(self, voc, step: int) -> None:
        got = self._val_clips()
        if got is None:
            return
        clips, mel = got
        if "mrstft_gl" not in self._val_cache:  # the true mels do not change: measure Griffin-Lim once
            self._val_cache["mrstft_gl"] = float(_mrstft(self._griffin_lim(mel), clips))
        self._write_validation("vocoder", step, {"mrstft_hifigan": float(_mrstft(voc(mel), clips)),
                                                 "mrstft_griffin_lim": self._val_cache["mrstft_gl"]})

    @torch.no_grad()
    def _validate_unet(self, unet, vae, clap, step: int) -> None:
        """Epsilon loss on validation windows with fixed noise and timesteps, and sampled clips."""
        from .samplers import q_sample, training_scheduler

        stems = self._val_stems()
        if stems is None:
            return
        b, s = stems.shape[:2]
        g = step_generator(self.cfg.seed, len(STAGES), 0, 0)  # a stream no training step uses
        z = vae.encode(_mels(self.front, stems, self.frames)).latent_dist.mode()
        x0 = (z * vae.config.scaling_factor).reshape(b, s, *z.shape[1:])
        alphas = training_scheduler().alphas_cumprod
        t = torch.linspace(0, len(alphas) - 1, b).long()
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        cond = None if clap is None else clap.null.expand(b, -1)
        eps = unet(q_sample(x0, alphas[t].view(b, 1, 1, 1, 1).to(x0.device), noise), t.to(x0.device), cond)
        self._write_validation("unet", step, {"eps_mse": float(F.mse_loss(eps.float(), noise))})
        if self.cfg.validation.samples:
            self._sample_clips(unet, vae, clap, step)

    def _sample_clips(self, unet, vae, clap, step: int) -> None:
        from .audio import griffin_lim_vocoder
        from .pipeline import MultiTrackPipeline
        from .samplers import training_scheduler

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

    def _write_validation(self, stage: str, step: int, values: dict) -> None:
        path = self.out / "training" / "validation.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(("stage", "step", "metric", "value"))
            for k, v in values.items():
                w.writerow((stage, step, k, f"{v:.6g}"))

    def _read_validation(self, stage: str) -> dict:
        """The last value of each metric a stage logged."""
        path = self.out / "training" / "validation.csv"
        if not path.is_file():
            return {}
        with open(path, newline="") as f:
            return {r["metric"]: float(r["value"]) for r in csv.DictReader(f) if r["stage"] == stage}


class _Clap:
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
        from .conditioning import clap_text_embedding

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

    def embed(self, mix: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from .conditioning import clap_audio_embedding

        emb = clap_audio_embedding(self.model, self.processor, mix, self.sample_rate, self.clap_rate, self.max_seconds)
        drop = (torch.rand(len(mix), generator=g) < self.null_fraction).to(emb.device)
        return torch.where(drop[:, None], self.null.to(emb.device), emb)


def _mrstft(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """MR-STFT distance over the samples both have (a vocoder may return a few more or fewer)."""
    from .metrics import mrstft_distance

    n = min(est.shape[-1], ref.shape[-1])
    return mrstft_distance(est[..., :n], ref[..., :n])


def build_vocoder(cfg: TrainConfig):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    v = cfg.vocoder
    return SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=cfg.audio.n_mels, sampling_rate=cfg.audio.sample_rate,
        upsample_initial_channel=v.upsample_initial_channel, upsample_rates=list(v.upsample_rates),
        upsample_kernel_sizes=[2 * r for r in v.upsample_rates], resblock_kernel_sizes=list(v.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in v.resblock_dilation_sizes], normalize_before=False))


class _ema_weights:
    """Swap the EMA weights into a model for the duration of a ``with`` block."""

    def __init__(self, ema, model):
        self.ema, self.model = ema, model

    def __enter__(self):
        self.ema.store(self.model.parameters())
        self.ema.copy_to(self.model.parameters())

    def __exit__(self, *exc):
        self.ema.restore(self.model.parameters())


def train(config: TrainConfig | os.PathLike, out: os.PathLike, *, stages=STAGES, resume: bool = True,
          force: bool = False, cpu: bool = False, progress: Optional[Callable[[dict], None]] = None) -> Path:
    """Train ``stages`` of ``config`` into ``out``; returns the model folder (loadable with ``--model``).

    A folder holding a run of the same config is resumed; anything else in ``out`` is an error unless
    ``force`` (or ``resume=False`` with ``force``: start over).
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"--stage {unknown[0]}: unknown stage", f"stages are: {', '.join(STAGES)}")
    check_out(cfg, Path(out), resume=resume, force=force)
    trainer = Trainer(cfg, out, cpu=cpu, progress=progress)
    for stage in STAGES:
        if stage in stages:
            getattr(trainer, f"train_{stage}")(resume=resume)
    return Path(out)


def check_out(cfg: TrainConfig, out: Path, *, resume: bool, force: bool) -> None:
    from .errors import OutputError

    if not out.exists() or not any(out.iterdir()):
        return
    saved = out / "training" / "config.json"
    if not saved.is_file():
        if not force:
            raise OutputError(f"{out}: exists and is not a training run", "choose another --out, or pass --force")
        return
    if not resume:
        if not force:
            raise OutputError(f"{out}: holds a training run", "drop --no-resume to continue it, or pass --force to start over")
        shutil.rmtree(out / "training")
        return
    try:
        same = TrainConfig.model_validate_json(saved.read_text()) == cfg
    except ValidationError:  # written by another version of mtldm
        same = False
    if not same and not force:
        raise OutputError(f"{out}: was trained with another config (see {saved})",
                          "use the same config to resume, another --out, or --force")


# ----- files ---------------------------------------------------------------------------------------

def _save_component(save: Callable[[Path], None], folder: Path) -> None:
    with staged_dir(folder) as tmp:
        save(tmp)


class _Log:
    FIELDS = ("stage", "step", "loss", "l1", "kl", "elapsed_s")

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, stage: str, step: int, values: dict, elapsed: float) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            if new:
                w.writeheader()
            w.writerow({"stage": stage, "step": step, "elapsed_s": round(elapsed, 3),
                        **{k: f"{v:.6g}" for k, v in values.items()}})


def plot_losses(log: Path, out: Path, width: int = 720, height: int = 240) -> None:
    """An SVG of each stage's loss against its step (log scale), from the CSV log; no plotting library."""
    if not log.exists():
        return
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    stages = [s for s in STAGES if any(r["stage"] == s for r in rows)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height * len(stages)}" '
             'font-family="sans-serif" font-size="12">']
    for k, stage in enumerate(stages):
        pts = {}
        for r in rows:  # a resumed run re-logs steps: the last value of a step wins
            if r["stage"] == stage and r["loss"]:
                pts[int(r["step"])] = float(r["loss"])
        steps, losses = zip(*sorted(pts.items()))
        ys = [math.log10(max(v, 1e-12)) for v in losses]
        lo, hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        x0, y0, w, h = 60, k * height + 20, width - 80, height - 50
        coords = " ".join(f"{x0 + w * (s - steps[0]) / max(1, steps[-1] - steps[0]):.1f},"
                          f"{y0 + h * (hi - y) / (hi - lo):.1f}" for s, y in zip(steps, ys))
        parts += [f'<text x="{x0}" y="{y0 - 6}">{stage} loss (log10), steps {steps[0]}–{steps[-1]}</text>',
                  f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
                  f'<text x="4" y="{y0 + 10}">{10 ** hi:.3g}</text><text x="4" y="{y0 + h}">{10 ** lo:.3g}</text>',
                  f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>']
    parts.append("</svg>")
    atomic_write_text(out, "\n".join(parts) + "\n")
