"""Training: the VAE on per-stem log-mels, then the multi-track UNet on the frozen VAE's latents.

One config file (YAML or TOML, validated by pydantic) describes the model and the run. Stages write
into one output folder that is a model folder in the registry's layout the moment a stage has
saved (``--model OUT`` loads it), plus ``training/`` with the resumable state of each stage, a CSV
log of the losses and an SVG plot of them.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .audio import atomic_write_text, staged_dir
from .config import AudioConfig, PipelineConfig, SamplingDefaults
from .errors import InputError
from .model import UNetConfig

STAGES = ("vae", "unet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train: Path
    validation: Optional[Path] = None
    layout: Literal["auto", "stems", "slakh"] = "auto"
    stem_map: dict[str, list[str]] = Field(default_factory=dict)
    num_workers: int = 0


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


class TrainConfig(_Strict):
    name: str
    description: str = ""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    data: DataConfig
    vae: VAETrain = Field(default_factory=VAETrain)
    unet: UNetTrain = Field(default_factory=UNetTrain)
    vocoder: Literal["griffin-lim"] = "griffin-lim"
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)


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
        self.data = StemDataset(cfg.data.train, stems=cfg.audio.stems, sample_rate=cfg.audio.sample_rate,
                                segment_seconds=cfg.audio.segment_seconds, layout=cfg.data.layout,
                                stem_map=cfg.data.stem_map or None, seed=cfg.seed)
        self.frames = cfg.audio.segment_frames
        if self.acc.is_main_process:
            (self.out / "training").mkdir(parents=True, exist_ok=True)
            (self.out / "training" / "config.json").write_text(cfg.model_dump_json(indent=2))

    # -- the loop shared by every stage --------------------------------------------------------
    def _loop(self, stage: str, model: torch.nn.Module, opt_cfg: Optim, loss_fn, *, ema=None,
              on_save: Callable[[], None], resume: bool) -> int:
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
        acc.free_memory()  # the next stage prepares (and checkpoints) only its own model
        return opt_cfg.steps

    def _save(self, state: Path, step: int, export: Callable[[], None]) -> None:
        """Resumable state first, then the step that names it, then the loadable model."""
        self.acc.wait_for_everyone()
        self.acc.save_state(str(state))
        if self.acc.is_main_process:
            atomic_write_text(state / "step.json", json.dumps({"step": step}))
            export()
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

        def export():
            m = self.acc.unwrap_model(vae).vae
            _save_component(lambda p: m.save_pretrained(p), self.out / "vae")

        self._loop("vae", vae, cfg.vae, loss_fn, on_save=export, resume=resume)

    # -- UNet ----------------------------------------------------------------------------------
    def train_unet(self, *, resume: bool = True) -> None:
        from diffusers import AutoencoderKL
        from diffusers.training_utils import EMAModel

        from .model import MultiTrackUNet
        from .samplers import q_sample, training_scheduler

        cfg = self.cfg
        if not (self.out / "vae" / "config.json").is_file():
            raise InputError(f"{self.out}: has no trained VAE", "train the vae stage first (--stage vae)")
        vae = AutoencoderKL.from_pretrained(self.out / "vae").to(self.acc.device).eval().requires_grad_(False)
        if cfg.unet.unet.stems != len(cfg.audio.stems) or cfg.unet.unet.latent_channels != vae.config.latent_channels:
            raise InputError("unet.unet.stems / latent_channels do not match audio.stems / the VAE's latent channels")
        if cfg.unet.unet.cond_dim is not None:
            raise InputError("unet.unet.cond_dim: CLAP-conditioned training is not supported yet",
                             "set cond_dim: null (unconditional)")
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
            t = torch.randint(0, len(alphas), (b,), generator=g).to(stems.device)
            noise = torch.randn(x0.shape, generator=g).to(stems.device)
            a = alphas.to(stems.device)[t].view(b, 1, 1, 1, 1)
            eps = model(q_sample(x0, a, noise), t)
            return F.mse_loss(eps.float(), noise), {}

        def export():
            m = self.acc.unwrap_model(unet)
            with _ema_weights(ema, m):
                _save_component(lambda p: m.save_pretrained(p), self.out / "unet")
            self._write_pipeline()

        self._loop("unet", unet, cfg.unet, loss_fn, ema=ema, on_save=export, resume=resume)

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

    def _write_pipeline(self) -> None:
        cfg = self.cfg
        pipe = PipelineConfig(name=cfg.name, description=cfg.description, audio=cfg.audio, conditioning="none",
                              vocoder=cfg.vocoder, sampling=cfg.sampling)
        atomic_write_text(self.out / "pipeline.json", pipe.model_dump_json(indent=2))
        from .samplers import training_scheduler

        _save_component(lambda p: training_scheduler().save_pretrained(p), self.out / "scheduler")


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
    if TrainConfig.model_validate_json(saved.read_text()) != cfg and not force:
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
