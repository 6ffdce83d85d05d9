"""The training loop every stage shares, and its step-indexed data and noise.

Every step's batch and noise are drawn from (seed, stage, step, process), so a run resumed from its
last save makes exactly the steps, and the weights, that an uninterrupted run makes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..audio import atomic_write_text
from .config import STAGES, Optim, TrainConfig, stage_frames
from .logs import LossLog, plot_losses

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


def stem_mels(front, stems: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B, S, N]`` -> ``[B*S, 1, frames, n_mels]`` log-mels, one per stem."""
    b, s, n = stems.shape
    return front(stems.reshape(b * s, n), frames)[:, None]


def posterior_sample(posterior, g: torch.Generator) -> torch.Tensor:
    """A draw from the VAE posterior with noise from ``g`` (made on the CPU: the same on any device)."""
    return posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(posterior.mean.device)


@dataclass
class Adversary:
    """Discriminators trained against a stage's model: from step ``start`` on, each step first updates
    them on ``loss(model, disc, stems, g)``, then the model's loss_fn gets them as ``disc``."""

    module: torch.nn.Module
    loss: Callable
    start: int = 0


def stage_autocast(device: torch.device, opt_cfg: Optim) -> torch.autocast:
    """The stage's own precision: bf16 autocast when its ``mixed_precision`` says so."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=opt_cfg.mixed_precision == "bf16")


class Trainer:
    """What every stage shares: the config, the output folder, accelerate, the data, and the loop."""

    def __init__(self, cfg: TrainConfig, out: os.PathLike, *, cpu: bool = False,
                 progress: Optional[Callable[[dict], None]] = None, frames: Optional[int] = None):
        """``frames``: the mel frames of a training window (default: data.window_frames, else the segment)."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ..audio import MelFrontEnd

        self.cfg, self.out, self.progress = cfg, Path(out), progress
        # Without a GPU, accelerate needs cpu=True to see a multi-process launch (else each process runs alone).
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu or not torch.cuda.is_available())
        set_seed(cfg.seed)
        self.front = MelFrontEnd(cfg.audio)
        self.frames = frames or stage_frames(cfg)
        seconds = self.frames * cfg.audio.hop_length / cfg.audio.sample_rate
        self.data = self.dataset(cfg.data.train, seconds)
        self.val = None if cfg.data.validation is None else self.dataset(cfg.data.validation, seconds)
        if self.acc.is_main_process:
            (self.out / "training").mkdir(parents=True, exist_ok=True)
            (self.out / "training" / "config.json").write_text(cfg.model_dump_json(indent=2))

    def dataset(self, root: Path, seconds: float):
        """The stems of ``root`` in windows of ``seconds``, as the config reads them."""
        from ..data.datasets import StemDataset

        cfg = self.cfg
        return StemDataset(root, stems=cfg.audio.stems, sample_rate=cfg.audio.sample_rate, segment_seconds=seconds,
                           layout=cfg.data.layout, stem_map=cfg.data.stem_map or None, seed=cfg.seed)

    def loop(self, stage: str, model: torch.nn.Module, opt_cfg: Optim, loss_fn, *, ema=None,
             adversary: Optional[Adversary] = None, data=None, on_save: Callable[[int], None], resume: bool) -> int:
        """Train ``model`` on ``loss_fn(model, stems, g, batch=..., [disc=...])`` for the stage's steps,
        over ``data`` (default: the run's training windows)."""
        acc, cfg = self.acc, self.cfg
        sid = STAGES.index(stage)
        state = self.out / "training" / stage
        start = saved_step(state) if resume else 0
        if start >= opt_cfg.steps:
            return start
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=opt_cfg.lr, betas=opt_cfg.betas)
        model, opt = acc.prepare(model, opt)
        disc = opt_d = None
        if adversary is not None:
            opt_d = torch.optim.AdamW(adversary.module.parameters(), lr=opt_cfg.lr, betas=opt_cfg.betas)
            disc, opt_d = acc.prepare(adversary.module, opt_d)
        if ema is not None:
            acc.register_for_checkpointing(ema)
        if start:
            acc.load_state(str(state))
        from torch.utils.data import DataLoader

        data = self.data if data is None else data
        batches = StepBatches(len(data), opt_cfg.batch_size, cfg.seed, sid, start, opt_cfg.steps,
                              acc.process_index, acc.num_processes)
        loader = DataLoader(data, batch_sampler=batches, num_workers=cfg.data.num_workers)
        log = LossLog(self.out / "training" / "log.csv", enabled=acc.is_main_process)
        model.train()
        started = time.perf_counter()
        for step, batch in zip(range(start, opt_cfg.steps), loader):
            # Dropout and anything else that draws from torch's global RNG: seeded from the step, so a
            # resumed run draws what an uninterrupted one does (the data loader's own draws aside).
            torch.manual_seed(int(step_generator(cfg.seed, sid, step, acc.process_index).initial_seed()) ^ 0x5EED)
            stems = batch["stems"].to(acc.device) if "stems" in batch else None  # a latent cache has none
            extra: dict = {"batch": batch}
            if adversary is not None:
                adversarial = step >= adversary.start
                extra["disc"] = disc if adversarial else None
                if adversarial:
                    assert disc is not None and opt_d is not None
                    with acc.autocast(), stage_autocast(acc.device, opt_cfg):
                        d_loss = adversary.loss(model, disc, stems, step_generator(cfg.seed, sid, step, acc.process_index))
                    acc.backward(d_loss)
                    if opt_cfg.grad_clip:
                        acc.clip_grad_norm_(disc.parameters(), opt_cfg.grad_clip)
                    opt_d.step()
                    opt_d.zero_grad(set_to_none=True)
                    opt.zero_grad(set_to_none=True)
            g = step_generator(cfg.seed, sid, step, acc.process_index)  # the same draws the discriminators' step saw
            with acc.autocast(), stage_autocast(acc.device, opt_cfg):
                loss, parts = loss_fn(model, stems, g, **extra)
            if adversary is not None and extra["disc"] is not None:
                parts = {**parts, "disc": d_loss}
            acc.backward(loss)
            if opt_cfg.grad_clip:
                acc.clip_grad_norm_(params, opt_cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if opt_d is not None:
                opt_d.zero_grad(set_to_none=True)  # the model's loss reached the discriminators too
            if ema is not None:
                ema.step(acc.unwrap_model(model).parameters())
            done = step + 1
            if done % cfg.log_every == 0 or done == opt_cfg.steps:
                values = {k: float(acc.reduce(v.detach().float(), "mean")) for k, v in {"loss": loss, **parts}.items()}
                log.write(stage, done, values, time.perf_counter() - started)
            if self.progress and acc.is_main_process:
                self.progress({"i": step, "total": opt_cfg.steps, "stage": stage, "loss": float(loss.detach())})
            if done % cfg.save_every == 0 or done == opt_cfg.steps:
                self.save(state, done, on_save)
        model.eval()
        acc.free_memory()  # the next stage prepares (and checkpoints) only its own model...
        acc._custom_objects.clear()  # ...and not this stage's EMA (accelerate has no public unregister)
        return opt_cfg.steps

    def save(self, state: Path, step: int, export: Callable[[int], None]) -> None:
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

