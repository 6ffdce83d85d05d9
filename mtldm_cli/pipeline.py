"""The one pipeline object: VAE, multi-track UNet, vocoder, optional CLAP and a noise schedule.

It serves every task: ``generate`` (from nothing or a text prompt), ``condition`` (on a reference
clip), ``arrange`` (given some stems, make the others) and ``separate`` (a mixture into stems).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, get_args

import numpy as np
import torch

from . import __version__
from .audio import AudioLike, MelFrontEnd, atomic_write_text, check_writable, griffin_lim_vocoder, is_silent, save_audio_files, to_mono_tensor
from .checkpoints import PIPELINE_FILE, ResolvedModel, resolve_model
from .config import PRESETS, PipelineConfig, Sampler
from .errors import InputError, ModelError, StemError
from .samplers import cfg_model_fn, sample_ddim, sample_scheduler
from .separation import eps_score, karras_sigmas, sample_separation, separation_differential, wiener_filter

Callback = Callable[[dict], None] | None
METHODS = ("dirac", "gaussian", "consistency")
SAMPLERS = get_args(Sampler)


@dataclass
class MultiTrackOutput:
    """Stems as float32 mono arrays at ``sample_rate``; ``mix`` is always the sum of ``stems``."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    info: dict = field(default_factory=dict)

    @property
    def mix(self) -> np.ndarray:
        return np.sum(list(self.stems.values()), axis=0).astype(np.float32)

    @property
    def duration(self) -> float:
        return len(next(iter(self.stems.values()))) / self.sample_rate

    def paths(self, folder: str | os.PathLike) -> dict[str, Path]:
        return output_paths(folder, self.stems)

    def save(self, folder: str | os.PathLike, *, force: bool = False, subtype: str = "pcm16") -> list[Path]:
        """Write ``<stem>.wav`` for each stem, ``mix.wav`` and ``run.json``, all or nothing."""
        paths = self.paths(folder)
        check_writable(paths.values(), force=force)
        audio = {paths[n]: w for n, w in self.stems.items()} | {paths["mix"]: self.mix}
        written = save_audio_files(audio, self.sample_rate, subtype=subtype, force=True)
        info = self.info | {"files": [p.name for p in written], "sample_rate": self.sample_rate}
        atomic_write_text(paths["run.json"], json.dumps(info, indent=2, default=str) + "\n")
        return [*written, paths["run.json"]]


def output_paths(folder: str | os.PathLike, stems: Iterable[str]) -> dict[str, Path]:
    """The files a result writes: ``<stem>.wav`` per stem, ``mix.wav`` and ``run.json``."""
    folder = Path(folder)
    return {n: folder / f"{n}.wav" for n in [*stems, "mix"]} | {"run.json": folder / "run.json"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available on this machine", "use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: MPS is not available on this machine", "use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: unknown device", "use auto, cpu, cuda or mps") from None


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


class MultiTrackPipeline:
    """Multi-Track MusicLDM: stems as a ``[B, S, C, T, F]`` latent, denoised jointly by one UNet."""

    def __init__(self, *, config: PipelineConfig, vae, unet, vocoder, scheduler, clap=None,
                 clap_processor=None, source: ResolvedModel | None = None):
        self.config = config
        self.vae, self.unet, self.vocoder, self.scheduler = vae, unet, vocoder, scheduler
        self.clap, self.clap_processor = clap, clap_processor
        self.source = source
        self.mel = MelFrontEnd(config.audio)
        self.device = torch.device("cpu")
        self._null: torch.Tensor | None = None
        if (clap is None) != (config.conditioning == "none"):
            raise ModelError(f"model '{config.name}': conditioning '{config.conditioning}' does not match its components")
        if unet.config.stems != len(config.audio.stems):
            raise ModelError(f"model '{config.name}': UNet has {unet.config.stems} stems, audio config {len(self.stems)}")

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str = "demo", *, device: str = "auto", revision: str | None = None,
                        offline: bool | None = None, cache_dir: str | os.PathLike | None = None,
                        progress: Callable[[str], None] | None = None) -> "MultiTrackPipeline":
        """Load a registry name, a local folder or a hub repo id (see ``checkpoints.toml``)."""
        resolved = resolve_model(model, revision=revision, offline=offline, cache_dir=cache_dir, progress=progress)
        return cls.from_folder(resolved.path, source=resolved).to(device)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, source: ResolvedModel | None = None) -> "MultiTrackPipeline":
        from diffusers import AutoencoderKL, DDIMScheduler
        from safetensors import SafetensorError
        from transformers import ClapModel, ClapProcessor, SpeechT5HifiGan

        from .model import MultiTrackUNet

        _quiet_libraries()
        folder = Path(folder)
        try:
            config = PipelineConfig.model_validate_json((folder / PIPELINE_FILE).read_text())
            parts = dict(
                vae=AutoencoderKL.from_pretrained(folder / "vae"),
                unet=MultiTrackUNet.from_pretrained(folder / "unet"),
                vocoder=(griffin_lim_vocoder(config.audio) if config.vocoder == "griffin-lim"
                         else SpeechT5HifiGan.from_pretrained(folder / "vocoder")),
                scheduler=DDIMScheduler.from_pretrained(folder / "scheduler"),
            )
            if config.conditioning == "clap":
                parts |= dict(clap=ClapModel.from_pretrained(folder / "clap"),
                              clap_processor=ClapProcessor.from_pretrained(folder / "clap"))
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{folder}: cannot load the model ({reason})", "the folder is incomplete or corrupt") from None
        for m in parts.values():
            if isinstance(m, torch.nn.Module):
                m.eval().requires_grad_(False)
        return cls(config=config, source=source, **parts)

    def to(self, device: str | torch.device = "auto") -> "MultiTrackPipeline":
        self.device = resolve_device(device)
        for m in (self.vae, self.unet, self.vocoder, self.clap):
            if m is not None:
                m.to(self.device)
        self.mel._mel.to(self.device)
        return self

    # -- properties ------------------------------------------------------------------------------
    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.audio.stems

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def conditional(self) -> bool:
        return self.clap is not None

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _frames(self, samples: int) -> int:
        """Mel frames covering ``samples``, rounded up so the VAE and UNet can downsample them."""
        multiple = self.vae_factor * self.unet.config.downsample_factor
        frames = -(-samples // self.config.audio.hop_length)
        return -(-frames // multiple) * multiple

    def _samples(self, duration: float | None) -> int:
        seconds = self.config.audio.segment_seconds if duration is None else duration
        if not (seconds > 0 and np.isfinite(seconds)):
            raise InputError(f"--duration {duration}: must be a positive number of seconds")
        return max(1, round(seconds * self.sample_rate))

    # -- building blocks -------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Latent frames the model was trained on (10.24 s): longer audio is done window by window."""
        return self.config.audio.segment_frames // self.vae_factor

    def window_starts(self, frames: int) -> list[int]:
        """First latent frame of each window covering ``frames``; consecutive windows overlap."""
        lat_per_s = self.sample_rate / self.config.audio.hop_length / self.vae_factor
        return overlapping_starts(frames, self.window, self._overlap(self.window, lat_per_s))

    def chunk_starts(self, samples: int) -> tuple[list[int], int, int]:
        """Start samples of the segment-long chunks that cover ``samples``, the chunk length and
        the overlap between neighbours (the latent windows' rule, in samples)."""
        seg = round(self.config.audio.segment_seconds * self.sample_rate)
        overlap = self._overlap(seg, self.sample_rate)
        return overlapping_starts(samples, seg, overlap), seg, overlap

    def _overlap(self, width: int, per_second: float) -> int:
        """The configured overlap between windows of ``width`` units, at most half a window."""
        return min(width // 2, max(1, round(self.config.sampling.window_overlap_seconds * per_second)))

    def _by_windows(self, fn, x: torch.Tensor, frames: int, scale_in: int, scale_out: int) -> torch.Tensor:
        """Apply ``fn`` window by window along dim -2, cutting each overlap at its middle."""
        starts = self.window_starts(frames)
        if len(starts) == 1:
            return fn(x)
        w, pieces, done = self.window, [], 0
        for k, a in enumerate(starts):
            e = a + w
            cut = (starts[k + 1] + e) // 2 if k + 1 < len(starts) else frames
            y = fn(x[..., a * scale_in:e * scale_in, :])
            pieces.append(y[..., (done - a) * scale_out:(cut - a) * scale_out, :])
            done = cut
        return torch.cat(pieces, dim=-2)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, S, N]`` waveforms -> ``[B, S, C, T, F]`` scaled latents (posterior mode)."""
        b, s, n = wav.shape
        frames = self._frames(n)
        mel = self.mel(wav.to(self.device).reshape(b * s, n), frames)[:, None]

        def enc(m):
            return self.vae.encode(m).latent_dist.mode()

        z = self._by_windows(enc, mel, frames // self.vae_factor, self.vae_factor, 1) * self.vae.config.scaling_factor
        return z.reshape(b, s, *z.shape[1:])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, samples: int) -> torch.Tensor:
        """``[B, S, C, T, F]`` latents -> ``[B, S, samples]`` waveforms on the CPU."""
        b, s = latents.shape[:2]
        z = latents.reshape(b * s, *latents.shape[2:]) / self.vae.config.scaling_factor

        def dec(x):
            return self.vae.decode(x).sample

        mel = self._by_windows(dec, z, z.shape[-2], 1, self.vae_factor)[:, 0]
        wav = self.vocoder(mel)
        wav = torch.nn.functional.pad(wav, (0, max(0, samples - wav.shape[-1])))[..., :samples]
        return wav.reshape(b, s, samples).float().cpu()

    def _decode_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, S, C, T, F]`` scaled latents -> ``[B, S, frames, n_mels]`` log-mels (differentiable)."""
        b, s = latents.shape[:2]
        mel = self.vae.decode(latents.reshape(b * s, *latents.shape[2:]) / self.vae.config.scaling_factor).sample
        return mel.reshape(b, s, *mel.shape[-2:])

    def _require_clap(self, what: str) -> None:
        if not self.conditional:
            raise InputError(f"model '{self.config.name}' is unconditional (no CLAP): it cannot use {what}",
                             "use a CLAP-conditioned model, or drop that option")

    @torch.no_grad()
    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLAP text embeddings ``[B, D]``, L2-normalised as the model was trained."""
        self._require_clap("a text prompt")
        return clap_text_embedding(self.clap, self.clap_processor, prompts)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """CLAP audio embeddings ``[B, D]`` of ``[B, N]`` audio at the model's rate.

        The first ``clap_max_seconds`` are used, so the result never depends on a random crop.
        """
        self._require_clap("a reference clip")
        return clap_audio_embedding(self.clap, self.clap_processor, wav, self.sample_rate,
                                    self.config.clap_sample_rate, self.config.clap_max_seconds)

    def null_embedding(self) -> torch.Tensor | None:
        """The "no condition" embedding (CLAP of the empty text, as in MusicLDM); None if unconditional."""
        if not self.conditional:
            return None
        if self._null is None:
            self._null = self.embed_text([""])
        return self._null

    def _load(self, audio: AudioLike, sample_rate: int | None, name: str) -> torch.Tensor:
        return to_mono_tensor(audio, sample_rate, self.sample_rate, name)

    # -- sampling core ---------------------------------------------------------------------------
    def _sampling(self, preset: str | None, sampler: str | None, steps: int | None, eta: float | None):
        """Resolve (sampler, steps, eta): explicit values, else the preset, else the model's defaults."""
        base = self.config.sampling.model_dump()
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"unknown preset '{preset}'", f"use one of: {', '.join(PRESETS)}")
            base |= PRESETS[preset]
        sampler = sampler or base["sampler"]
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler '{sampler}'", f"use one of: {', '.join(SAMPLERS)}")
        steps = steps or base["steps"]
        if steps < 1:
            raise InputError(f"--steps {steps}: must be at least 1")
        return sampler, steps, base["eta"] if eta is None else eta

    def _denoise(self, model_fn, x, *, sampler: str, steps: int, eta: float, generator, known, callback):
        if sampler == "ddim":
            self.scheduler.set_timesteps(steps)
            return sample_ddim(model_fn, x, self.scheduler.alphas_cumprod, self.scheduler.timesteps, eta=eta,
                               final_alpha=float(self.scheduler.final_alpha_cumprod), generator=generator,
                               known=known, callback=callback)
        from diffusers import DPMSolverMultistepScheduler

        sched = DPMSolverMultistepScheduler.from_config(
            self.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
            steps_offset=0, final_sigmas_type="zero")
        sched.set_timesteps(steps, device=x.device)
        return sample_scheduler(model_fn, x, sched, generator=generator, known=known, callback=callback)

    def _sample(self, *, samples: int, cond, steps: int | None, guidance: float, eta: float | None,
                seed: int | None, known=None, callback: Callback = None, preset: str | None = None,
                sampler: str | None = None) -> tuple[torch.Tensor, dict]:
        """Sample ``samples`` of audio; beyond one window, window by window with overlap.

        Each window after the first imputes its overlap with the previous window's result (like a
        given stem), so the music continues across the border. ``known = (x0, mask)`` is the
        full-length latent of the given stems and the per-stem mask.
        """
        sampler, steps, eta = self._sampling(preset, sampler, steps, eta)
        seed = secrets.randbelow(2**31) if seed is None else seed
        g = torch.Generator().manual_seed(seed)
        frames = self._frames(samples) // self.vae_factor
        shape = (1, len(self.stems), self.unet.config.latent_channels, frames, self.config.audio.n_mels // self.vae_factor)
        uncond = self.null_embedding()
        if cond is None:
            cond, guidance = uncond, 1.0
        model_fn = cfg_model_fn(self.unet, cond, uncond, guidance)
        starts = self.window_starts(frames)
        width = min(frames, self.window)
        z = torch.zeros(shape, device=self.device)
        done = 0
        t0 = time.perf_counter()
        for k, a in enumerate(starts):
            e = a + width
            x = torch.randn((*shape[:3], width, shape[4]), generator=g).to(self.device)
            x0 = torch.zeros_like(x)
            mask = torch.zeros(1, shape[1], 1, width, 1, device=self.device)
            if known is not None:
                x0 = known[0][..., a:e, :].clone()
                mask = mask + known[1]
            if done > a:  # the overlap with the previous window is known
                x0[..., : done - a, :] = z[..., a:done, :]
                mask[..., : done - a, :] = 1.0
            step_cb = None
            if callback is not None:
                def step_cb(info, k=k):
                    callback(info | {"i": k * steps + info["i"], "total": len(starts) * steps, "window": k})
            z[..., a:e, :] = self._denoise(model_fn, x, sampler=sampler, steps=steps, eta=eta, generator=g,
                                           known=(x0, mask) if mask.any() else None, callback=step_cb)
            done = e
        t1 = time.perf_counter()
        wav = self.decode(z, samples)
        info = dict(seed=seed, sampler=sampler, steps=steps, guidance=guidance, windows=len(starts),
                    **({"eta": eta} if sampler == "ddim" else {}),
                    timings=dict(sample_s=round(t1 - t0, 3), decode_s=round(time.perf_counter() - t1, 3)))
        return wav[0], info

    def _info(self, task: str, **extra) -> dict:
        src = self.source
        return dict(task=task, model=self.config.name, source=src.source if src else None,
                    revision=src.revision if src else None, mtldm_version=__version__,
                    device=str(self.device), **extra)

    # -- tasks -----------------------------------------------------------------------------------
    def generate(self, prompt: str | None = None, *, duration: float | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None, seed: int | None = None,
                 preset: str | None = None, sampler: str | None = None, callback: Callback = None) -> MultiTrackOutput:
        """All stems from noise; steered by the CLAP text embedding of ``prompt`` when given."""
        cond = self.embed_text([prompt]).to(self.device) if prompt else None
        guidance = self.config.sampling.guidance if guidance is None else guidance
        samples = self._samples(duration)
        wav, info = self._sample(samples=samples, cond=cond, steps=steps, guidance=guidance, eta=eta,
                                 seed=seed, preset=preset, sampler=sampler, callback=callback)
        return self._output(wav, self.stems, self._info("generate", prompt=prompt, **info))

    def condition(self, reference: AudioLike, *, sample_rate: int | None = None, duration: float | None = None,
                  steps: int | None = None, guidance: float | None = None, eta: float | None = None,
                  seed: int | None = None, preset: str | None = None, sampler: str | None = None,
                  callback: Callback = None) -> MultiTrackOutput:
        """All stems, steered by the CLAP audio embedding of a reference clip."""
        self._require_clap("a reference clip")
        ref = self._load(reference, sample_rate, "reference")
        if is_silent(ref):
            raise InputError(f"{_name(reference, 'reference')}: is silent", "give a reference with audible content")
        cond = self.embed_audio(ref[None])
        guidance = self.config.sampling.guidance if guidance is None else guidance
        wav, info = self._sample(samples=self._samples(duration), cond=cond, steps=steps, guidance=guidance,
                                 eta=eta, seed=seed, preset=preset, sampler=sampler, callback=callback)
        return self._output(wav, self.stems, self._info("condition", reference=_name(reference, None), **info))

    def arrange(self, given: Mapping[str, AudioLike], want: Iterable[str] | None = None, *,
                sample_rate: int | None = None, prompt: str | None = None, steps: int | None = None,
                guidance: float | None = None, eta: float | None = None, seed: int | None = None,
                preset: str | None = None, sampler: str | None = None, callback: Callback = None) -> MultiTrackOutput:
        """Generate the ``want`` stems to fit the ``given`` ones (default: every stem not given).

        Given stems are imputed at every step and returned sample-exact. The condition is the text
        ``prompt`` if given, else the CLAP embedding of the given stems' mix (never of anything the
        user did not give).
        """
        given_names, want_names = self.check_arrangement(given, want)
        wavs = {s: self._load(given[s], sample_rate, f"given stem '{s}'") for s in given_names}
        samples = _common_length(wavs, self.sample_rate)
        wavs = {s: w[:samples] for s, w in wavs.items()}
        warnings = [f"given stem '{s}' is silent" for s, w in wavs.items() if is_silent(w)]
        stacked = torch.zeros(1, len(self.stems), samples)
        mask = torch.zeros(1, len(self.stems), 1, 1, 1)
        for s, w in wavs.items():
            stacked[0, self.stems.index(s)] = w
            mask[0, self.stems.index(s)] = 1.0
        x0 = self.encode(stacked)
        mask = mask.to(x0)
        given_mix = stacked.sum(1)
        cond = None
        if prompt:
            cond = self.embed_text([prompt])
        elif self.conditional and not is_silent(given_mix):
            cond = self.embed_audio(given_mix)
        guidance = self.config.sampling.arrange_guidance if guidance is None else guidance
        wav, info = self._sample(samples=samples, cond=cond, steps=steps, guidance=guidance, eta=eta, seed=seed,
                                 known=(x0, mask), preset=preset, sampler=sampler, callback=callback)
        for s, w in wavs.items():
            wav[self.stems.index(s)] = w
        keep = [s for s in self.stems if s in wavs or s in want_names]
        info = self._info("arrange", given=given_names, want=want_names, prompt=prompt,
                          condition="text" if prompt else "given-mix" if cond is not None else "none",
                          warnings=warnings, **info)
        return self._output(wav, keep, info)

    def check_arrangement(self, given: Iterable[str], want: Iterable[str] | None) -> tuple[list[str], list[str]]:
        """Validate stem names; returns (given, wanted) in the model's stem order."""
        given = list(given)
        known = ", ".join(self.stems)
        for s in [*given, *(want or [])]:
            if s not in self.stems:
                raise StemError(f"unknown stem '{s}'", f"this model's stems are: {known}")
        if not given:
            raise StemError("no stem given", "give at least one stem to arrange around, or use `generate`")
        if want is None:
            want = [s for s in self.stems if s not in given]
        want = list(want)
        both = [s for s in want if s in given]
        if both:
            raise StemError(f"stem '{both[0]}' is both given and wanted", "drop it from --want or from --given")
        if not want:
            raise StemError("nothing left to generate: every stem is given", "leave out a stem, or name it in --want")
        order = self.stems.index
        return sorted(set(given), key=order), sorted(set(want), key=order)

    def separate(self, mixture: AudioLike, *, sample_rate: int | None = None, method: str = "dirac",
                 steps: int | None = None, s_churn: float = 20.0, resamples: int = 2, sigma_min: float = 1e-4,
                 sigma_max: float = 1.0, gamma: float = 0.75, source: int = -1, consistency: float = 1.0,
                 wiener: bool = True, seed: int | None = None, callback: Callback = None) -> MultiTrackOutput:
        """Separate a mixture into stems with MSDM's ``dirac`` or ``gaussian`` posterior sampler, or
        ours, ``consistency``: gaussian plus a mel-domain mixture-consistency gradient through the
        decoder, of strength ``consistency``.

        The model is conditioned on the CLAP embedding of the mixture itself (what it was trained on).
        ``wiener`` (default) turns the decoded stems into soft masks over the mixture's STFT, so the
        outputs keep the mixture's phase and sum back to it (+35 dB SI-SDRi on the demo: docs/separation.md).
        """
        if method not in METHODS:
            raise InputError(f"unknown separation method '{method}'", f"use one of: {', '.join(METHODS)}")
        steps = steps or self.config.sampling.separate_steps
        if steps < 1 or resamples < 1:
            raise InputError("--steps and --resamples must be at least 1")
        if not 0 < sigma_min < sigma_max:
            raise InputError(f"sigma_min {sigma_min} and sigma_max {sigma_max}: need 0 < sigma_min < sigma_max")
        mix = self._load(mixture, sample_rate, "mixture")
        if is_silent(mix):
            raise InputError(f"{_name(mixture, 'mixture')}: is silent", "give a mixture with audible content")
        seed = secrets.randbelow(2**31) if seed is None else seed
        g = torch.Generator().manual_seed(seed)
        sigmas = karras_sigmas(steps, sigma_min, sigma_max)
        starts, seg, overlap = self.chunk_starts(mix.shape[-1])
        wav = torch.zeros(len(self.stems), mix.shape[-1])
        weight = torch.zeros(mix.shape[-1])
        t0, decode_s = time.perf_counter(), 0.0
        for k, a in enumerate(starts):  # the track stays on the CPU; one chunk at a time on the device
            piece = mix[a:a + seg]
            m = self.encode(piece[None, None])
            kwargs = {"source": source} if method == "dirac" else {"gamma_coeff": gamma}
            if method == "consistency":
                kwargs |= dict(decode_mel=self._decode_mel, guidance=consistency,
                               mixture_mel=self.mel(piece.to(self.device), m.shape[-2] * self.vae_factor)[None])
            cond = self.embed_audio(piece[None]) if self.conditional else None
            score = eps_score(cfg_model_fn(self.unet, cond, None, 1.0), sigma_max, self.scheduler.config.num_train_timesteps)
            noise = torch.randn((1, len(self.stems), *m.shape[2:]), generator=g).to(self.device)
            step_cb = None
            if callback is not None:
                def step_cb(info, k=k):
                    callback(info | {"i": k * steps + info["i"], "total": len(starts) * steps, "chunk": k})
            with torch.no_grad():
                z = sample_separation(separation_differential(method, score, m, **kwargs), noise, sigmas,
                                      s_churn=s_churn, num_resamples=resamples, generator=g, callback=step_cb)
            t1 = time.perf_counter()
            w = crossfade(len(piece), overlap, first=k == 0, last=k == len(starts) - 1)
            wav[:, a:a + seg] += self.decode(z, len(piece))[0] * w
            weight[a:a + seg] += w
            decode_s += time.perf_counter() - t1
        wav = wav / weight
        if wiener:
            wav = wiener_filter(wav, mix)
        sample_s = time.perf_counter() - t0 - decode_s
        info = self._info("separate", mixture=_name(mixture, None), method=method, wiener=wiener, seed=seed, steps=steps,
                          s_churn=s_churn, resamples=resamples, sigma_min=sigma_min, sigma_max=sigma_max,
                          **({"pinned_stem": self.stems[source]} if method == "dirac" else {"gamma": gamma}),
                          **({"consistency": consistency} if method == "consistency" else {}),
                          chunks=len(starts), timings=dict(sample_s=round(sample_s, 3), decode_s=round(decode_s, 3)))
        return self._output(wav, self.stems, info)

    def _output(self, wav: torch.Tensor, keep: Sequence[str], info: dict) -> MultiTrackOutput:
        stems = {s: wav[self.stems.index(s)].numpy().astype(np.float32) for s in keep}
        return MultiTrackOutput(stems=stems, sample_rate=self.sample_rate, info=info | {"stems": list(keep)})


def overlapping_starts(length: int, width: int, overlap: int) -> list[int]:
    """Starts of ``width``-long windows covering ``length``, consecutive ones sharing ``overlap``;
    the last window ends at ``length``."""
    if length <= width:
        return [0]
    return list(range(0, length - width, width - overlap)) + [length - width]


def crossfade(n: int, overlap: int, *, first: bool, last: bool) -> torch.Tensor:
    """Overlap-add weights of one chunk: linear ramps over the overlaps it shares with its neighbours."""
    w = torch.ones(n)
    ramp = torch.linspace(0, 1, overlap + 2)[1:-1] if overlap > 0 else torch.ones(0)
    if not first and overlap:
        w[:overlap] = ramp[: min(overlap, n)]
    if not last and overlap:
        w[n - overlap:] = ramp.flip(0)[-min(overlap, n):]
    return w


@torch.no_grad()
def clap_text_embedding(clap, processor, prompts: Sequence[str]) -> torch.Tensor:
    """CLAP text embeddings ``[B, D]``, L2-normalised as MusicLDM uses them."""
    device = next(clap.parameters()).device
    inputs = processor(text=list(prompts), return_tensors="pt", padding=True).to(device)
    return _embeds(clap.get_text_features(**inputs))


@torch.no_grad()
def clap_audio_embedding(clap, processor, wav: torch.Tensor, sample_rate: int, clap_rate: int,
                         max_seconds: float) -> torch.Tensor:
    """CLAP audio embeddings ``[B, D]`` of ``[B, N]`` audio: the first ``max_seconds`` only, so the
    result never depends on the feature extractor's random crop. Shared by sampling and training."""
    from .audio import resample

    device = next(clap.parameters()).device
    clips = resample(wav.float().cpu(), sample_rate, clap_rate)[..., : int(max_seconds * clap_rate)]
    inputs = processor(audio=list(clips.numpy()), sampling_rate=clap_rate, return_tensors="pt").to(device)
    return _embeds(clap.get_audio_features(**inputs))


def _embeds(out) -> torch.Tensor:
    emb = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.nn.functional.normalize(emb.float(), dim=-1)


def _name(audio, default):
    return str(audio) if isinstance(audio, (str, os.PathLike)) else default


def _common_length(wavs: Mapping[str, torch.Tensor], sample_rate: int) -> int:
    """Given stems must be equally long; a difference under 10 ms (resampling rounding) is cut."""
    lengths = {s: w.shape[-1] for s, w in wavs.items()}
    lo, hi = min(lengths.values()), max(lengths.values())
    if hi - lo > 0.01 * sample_rate:
        desc = ", ".join(f"{s} {n / sample_rate:.2f} s" for s, n in lengths.items())
        raise InputError(f"given stems differ in length ({desc})", "trim them to the same length")
    return lo
