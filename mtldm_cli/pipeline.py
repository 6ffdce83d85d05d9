"""The one pipeline object: a latent codec (mel, VAE, vocoder), the multi-track UNet, a conditioner
(CLAP) and a noise schedule, serving every task as numbered steps over those parts.

``generate`` (from nothing or a text prompt), ``condition`` (on a reference clip), ``arrange``
(given some stems, make the others) and ``separate`` (a mixture into stems).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import (
    MAX_CHANNELS,
    SUBTYPES,
    AudioLike,
    as_audio,
    audio_name,
    bytes_writer,
    check_file_format,
    check_writable,
    common_length,
    conform,
    fade_ends,
    is_silent,
    made_dir,
    output_paths,
    resample,
    to_mono_tensor,
    wav_writer,
    write_file_set,
)
from .checkpoints import ResolvedModel
from .codec import LatentCodec
from .components import load_components
from .conditioning import Conditioner
from .config import MAX_SECONDS, PipelineConfig
from .errors import NAME_ONLY, InputError, ModelError
from .names import safe_component
from .options import SamplingOptions, SeparationOptions
from .plot import PLOT_FILE, plot_stems
from .samplers import cfg_model_fn
from .sampling import Known, sample_windows
from .separation import eps_score, karras_sigmas, sample_separation, separation_differential, wiener_filter
from .sources import resolve_model
from .stems import check_arrangement, name_given, select
from .version import __version__
from .windows import OverlapAdd

Callback = Callable[[dict], None] | None


@dataclass
class MultiTrackOutput:
    """Stems as float32 arrays at ``sample_rate``, ``[N]`` mono or ``[C, N]``; ``mix`` is always their
    sum. ``subtype`` is the sample format of the given files, which :meth:`save` keeps by default."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    info: dict = field(default_factory=dict)
    subtype: str | None = None

    @property
    def mix(self) -> np.ndarray:
        return np.sum(list(self.stems.values()), axis=0).astype(np.float32)

    @property
    def duration(self) -> float:
        return next(iter(self.stems.values())).shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        first = next(iter(self.stems.values()))
        return 1 if first.ndim == 1 else first.shape[0]

    def paths(self, folder: str | os.PathLike, format: str = "wav") -> dict[str, Path]:
        return output_paths(folder, self.stems, format)

    def save(self, folder: str | os.PathLike, *, force: bool = False, subtype: str | None = None,
             format: str = "wav", plot: bool = False) -> list[Path]:
        """Write ``<stem>.<format>`` for each stem, the mix and ``run.json``, all or nothing, as
        ``subtype`` samples (default: the given files' own, else 16-bit); with ``plot``, also
        ``spectrograms.png``. With ``force``, the files of an earlier result there that this one does
        not replace (its run.json lists them) are removed, so that the stems beside the mix always sum
        to it."""
        subtype = subtype or self.subtype or "pcm16"
        check_file_format(format, subtype)
        paths = self.paths(folder, format) | ({PLOT_FILE: Path(folder) / PLOT_FILE} if plot else {})
        check_writable(paths.values(), force=force)
        audio: dict[Path, np.ndarray] = {paths[n]: w for n, w in self.stems.items()} | {paths["mix"]: self.mix}
        audio, notes = fit_full_scale(audio, paths["mix"]) if subtype != "float" else (audio, {})
        if notes:
            warning = notes.pop("warning", None)
            self.info = self.info | notes | ({"warnings": [*self.info.get("warnings", []), warning]} if warning else {})
        extra = [paths[PLOT_FILE]] if plot else []
        info = self.info | {"files": [p.name for p in [*audio, *extra]], "sample_rate": self.sample_rate,
                            "channels": self.channels, "format": format, "subtype": subtype}
        text = (json.dumps(info, indent=2, default=str) + "\n").encode()
        writers = {p: wav_writer(w, self.sample_rate, subtype, format) for p, w in audio.items()}
        if plot:
            png = plot_stems(self.stems, self.sample_rate, title=str(self.info.get("task", "")))
            writers[paths[PLOT_FILE]] = bytes_writer(png)
        with made_dir(paths["run.json"].parent):
            write_file_set(writers | {paths["run.json"]: bytes_writer(text)},
                           remove=earlier_result(paths["run.json"], set(paths.values())) if force else ())
        return [*audio, *extra, paths["run.json"]]


INAUDIBLE_DB = 0.05  # a gain change this small is recorded in run.json, not warned about


def fit_full_scale(audio: dict[Path, np.ndarray], mix: Path) -> tuple[dict[Path, np.ndarray], dict]:
    """Fixed-point WAVs clip above full scale: never silently. A stem above it turns every file down
    by one gain (the stems still sum to the mix); a mix alone above it is turned down by itself, the
    stems (a musician's given ones among them) left as they are. Returns the files and what run.json
    records, with a warning when the change is audible (:data:`INAUDIBLE_DB` or more)."""
    stems_peak = max((float(np.abs(w).max(initial=0.0)) for p, w in audio.items() if p != mix), default=0.0)
    mix_peak = float(np.abs(audio[mix]).max(initial=0.0))
    if max(stems_peak, mix_peak) <= 1.0:
        return audio, {}
    peak = max(stems_peak, mix_peak) if stems_peak > 1.0 else mix_peak
    db = round(-20 * np.log10(peak), 2)
    if stems_peak > 1.0:
        fitted, notes = {p: w / peak for p, w in audio.items()}, {"gain_db": db}
        warning = (f"the result peaks at {peak:.2f} (above full scale): every file was turned down {-db:.1f} dB so "
                   "that none clips; a float WAV (subtype='float', --float) keeps the level")
    else:
        fitted, notes = audio | {mix: audio[mix] / peak}, {"mix_gain_db": db}
        warning = (f"the mix peaks at {peak:.2f} (above full scale): mix.wav was turned down {-db:.1f} dB so that it "
                   "does not clip, the stems are as they were; a float WAV (subtype='float', --float) keeps the level")
    return fitted, notes | ({"warning": warning} if -db >= INAUDIBLE_DB else {})


def earlier_result(run_json: Path, keep: set[Path]) -> list[Path]:
    """The audio files an earlier result's ``run.json`` lists beside it, except ``keep``: only plain file
    names are taken from it, never a path."""
    try:
        files = json.loads(run_json.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    names = [n for n in files if isinstance(n, str) and n.endswith((".wav", ".flac", ".png")) and safe_component(n, "") == n]
    return [run_json.parent / n for n in names if run_json.parent / n not in keep]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    name = str(device)
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("{device}: CUDA is not available on this machine", "use cpu or auto", device=name)
    if name == "mps" and not mps:
        raise InputError("{device}: MPS is not available on this machine", "use cpu or auto", device=name)
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError("{device}: unknown device", "use auto, cpu, cuda or mps", device=name) from None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``fp32``, ``bf16``, ``fp16`` (or torch's dtype, or its name) as a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).removeprefix("torch.")
    by_name = DTYPES | {str(d).removeprefix("torch."): d for d in DTYPES.values()}
    if name not in by_name:
        raise InputError("{torch_dtype}: not a precision the models run in", "use fp32, bf16 or fp16", torch_dtype=str(dtype))
    return by_name[name]


class MultiTrackPipeline:
    """Multi-Track MusicLDM: stems as a ``[B, S, C, T, F]`` latent, denoised jointly by one UNet.

    Parts: ``codec`` (audio <-> latents, in windows), ``conditioner`` (CLAP embeddings), ``unet``
    and ``scheduler`` (the noise schedule the samplers follow).

    ``dtype`` is the precision of the UNet and the VAE, where the time goes; the samplers' arithmetic,
    CLAP (once a call) and the vocoder stay in float32.
    """

    def __init__(self, *, config: PipelineConfig, vae, unet, vocoder, scheduler, clap=None,
                 clap_processor=None, source: ResolvedModel | None = None):
        self.config, self.unet, self.scheduler, self.source = config, unet, scheduler, source
        self.codec = LatentCodec(config.audio, vae, vocoder, frame_multiple=unet.config.downsample_factor,
                                 overlap_seconds=config.sampling.window_overlap_seconds)
        self.conditioner = Conditioner(clap, clap_processor, model_name=config.name,
                                       sample_rate=config.audio.sample_rate, clap_sample_rate=config.clap_sample_rate,
                                       clap_max_seconds=config.clap_max_seconds)
        self.device, self.compiled = torch.device("cpu"), False
        if (clap is None) != (config.conditioning == "none"):
            raise ModelError(f"model '{config.name}': conditioning '{config.conditioning}' does not match its components")
        if unet.config.stems != len(config.audio.stems):
            raise ModelError(f"model '{config.name}': UNet has {unet.config.stems} stems, audio config {len(self.stems)}")

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str = "demo", *, device: str = "auto", revision: str | None = None,
                        offline: bool | None = None, cache_dir: str | os.PathLike | None = None,
                        progress: Callable[[str], None] | None = None, torch_dtype: str | torch.dtype = "fp32",
                        compile: bool = False) -> MultiTrackPipeline:
        """Load a registry name, a local folder or a hub repo id (see ``checkpoints.toml``), in
        ``torch_dtype`` (see the class), with the UNet compiled (``torch.compile``) if ``compile``."""
        target, dtype = resolve_device(device), resolve_dtype(torch_dtype)  # refuse before any loading
        resolved = resolve_model(model, revision=revision, offline=offline, cache_dir=cache_dir, progress=progress)
        pipe = cls.from_folder(resolved.path, source=resolved).to(target, dtype)
        return pipe.compile() if compile else pipe

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, source: ResolvedModel | None = None) -> MultiTrackPipeline:
        return cls(**vars(load_components(folder)), source=source)

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> MultiTrackPipeline:
        """Move to ``device`` (``auto``: the best there is) and/or cast the UNet and VAE to ``dtype``."""
        if device is not None:
            self.device = resolve_device(device)
            self.unet.to(self.device)
            self.codec.to(self.device)
            self.conditioner.to(self.device)
        if dtype is not None:
            dtype = resolve_dtype(dtype)
            self.unet.to(dtype=dtype)
            self.codec.vae.to(dtype=dtype)
        return self

    def compile(self, **options: Any) -> MultiTrackPipeline:
        """Compile the UNet's forward with ``torch.compile(**options)``: the first call pays for it,
        the steps after it run faster where the backend has a compiler (inductor needs a C++ one on
        the CPU)."""
        self.unet.compile(**options)
        self.compiled = True
        return self

    # -- what the model is -----------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The precision the UNet (and the VAE) run in."""
        return next(self.unet.parameters()).dtype

    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.audio.stems

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def conditional(self) -> bool:
        return self.conditioner.available

    def sampling_options(self, task: str = "generate", **overrides: Any) -> SamplingOptions:
        """This model's sampling defaults, a ``preset`` and ``overrides``, resolved once."""
        return SamplingOptions.resolve(self.config.sampling, task=task, **overrides)

    def separation_options(self, **overrides: Any) -> SeparationOptions:
        return SeparationOptions.resolve(self.config.sampling, **overrides)

    # -- tasks -----------------------------------------------------------------------------------
    def generate(self, prompt: str | None = None, *, duration: float | None = None, stems: Iterable[str] | None = None,
                 output_rate: int | None = None, output_channels: int | None = None,
                 options: SamplingOptions | None = None, callback: Callback = None, **overrides: Any) -> MultiTrackOutput:
        """All stems from noise; steered by the CLAP text embedding of ``prompt`` when given.

        ``stems`` keeps only those in the result (all are generated together either way).
        ``output_rate``/``output_channels``: the result's rate and channels (default: the model's, mono).
        ``overrides`` are :class:`SamplingOptions` fields (``steps``, ``seed``, ``preset``, ...).
        """
        # 1. options, condition and length
        check_output_shape(output_rate, output_channels)
        opts = self._resolve(options, overrides, "generate")
        keep = select(stems, self.stems)
        cond = self.conditioner.text([prompt]) if prompt else None
        samples = self._samples(duration)
        # 2. sample and decode
        wav, info = self._sample(samples, cond, opts, callback=callback)
        return self._output(wav, keep, self._info("generate", opts, prompt=prompt, **info), output_rate, output_channels)

    def generate_batch(self, seeds: Sequence[int], prompt: str | None = None, *, duration: float | None = None,
                       stems: Iterable[str] | None = None, batch_size: int = 4, output_rate: int | None = None,
                       output_channels: int | None = None, options: SamplingOptions | None = None,
                       callback: Callback = None, **overrides: Any) -> list[MultiTrackOutput]:
        """:meth:`generate` once per seed, ``batch_size`` clips at a time through the UNet and the
        decoder (one model load, batched forwards). Each result records its own seed."""
        if not seeds or len(set(seeds)) != len(seeds):
            raise InputError("{seeds}: give one or more different seeds", seeds=list(seeds))
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise InputError("{batch_size}: must be at least 1", batch_size=batch_size)
        check_output_shape(output_rate, output_channels)
        base = self._resolve(options, overrides, "generate")
        keep = select(stems, self.stems)
        cond = self.conditioner.text([prompt]) if prompt else None
        samples = self._samples(duration)
        per_seed = [type(base).model_validate(base.model_dump() | {"seed": s}) for s in seeds]  # each checked
        groups = [list(range(i, min(i + batch_size, len(seeds)))) for i in range(0, len(seeds), batch_size)]
        results = []
        for n, group in enumerate(groups):
            wav, info = self._sample_batch(samples, cond, base, [seeds[k] for k in group],
                                           callback=per_group(callback, n, len(groups)))
            for j, k in enumerate(group):
                info_k = self._info("generate", per_seed[k], prompt=prompt, batch=len(group), **info)
                results.append(self._output(wav[j], keep, info_k, output_rate, output_channels))
        return results

    def condition(self, reference: AudioLike, *, sample_rate: int | None = None, duration: float | None = None,
                  output_rate: int | None = None, output_channels: int | None = None,
                  options: SamplingOptions | None = None, callback: Callback = None, **overrides: Any) -> MultiTrackOutput:
        """All stems, steered by the CLAP audio embedding of a reference clip."""
        # 1. options and the reference's embedding
        self.conditioner.require("reference")
        check_output_shape(output_rate, output_channels)
        opts = self._resolve(options, overrides, "condition")
        samples = self._samples(duration)
        ref = to_mono_tensor(reference, sample_rate, self.sample_rate, "reference")
        if is_silent(ref):
            raise InputError(f"{audio_name(reference, 'reference')}: is silent", "give a reference with audible content")
        cond = self.conditioner.audio(ref[None])
        # 2. sample and decode
        wav, info = self._sample(samples, cond, opts, callback=callback)
        return self._output(wav, self.stems, self._info("condition", opts, reference=audio_name(reference, None), **info),
                            output_rate, output_channels)

    def arrange(self, given: Mapping[str, AudioLike] | Sequence[Any], want: Iterable[str] | None = None, *,
                sample_rate: int | None = None, prompt: str | None = None, output_rate: int | None = None,
                output_channels: int | None = None, options: SamplingOptions | None = None,
                callback: Callback = None, **overrides: Any) -> MultiTrackOutput:
        """Generate the ``want`` stems to fit the ``given`` ones (default: every stem not given).

        ``given`` is ``{stem: audio}``, or a list of files named by stem (``bass.wav``, ``01 Bass.wav``,
        ``keys.wav``); arrays at ``sample_rate`` (default: the model's) in the layouts of
        :func:`audio.channels_first`. The result is at the given stems' rate and channel count (or
        ``output_rate``/``output_channels``), as long as they are, and the given stems come back
        unchanged, sample for sample. The condition is the text ``prompt`` if given, else the CLAP
        embedding of the given stems' mix (never of anything the user did not give).
        """
        # 1. which stems, and the given audio at the model's rate, equally long
        named = name_given(given, self.stems)
        given_names, want_names = check_arrangement(named, want, self.stems)
        check_output_shape(output_rate, output_channels)
        opts = self._resolve(options, overrides, "arrange")
        if opts.given_guidance != 1.0 and not self.unet.config.arrangement:
            raise InputError("{given_guidance}: guidance by the given stems needs a UNet trained for arrangement "
                             "(this one imputes them)", "steer with {resample} or {reconstruction} instead",
                             given_guidance=opts.given_guidance, resample=NAME_ONLY, reconstruction=NAME_ONLY)
        originals = {s: as_audio(named[s], sample_rate, self.sample_rate, f"given stem '{s}'") for s in given_names}
        wavs = {s: resample(torch.from_numpy(a.samples), a.sample_rate, self.sample_rate) for s, a in originals.items()}
        samples = common_length({s: w.shape[-1] for s, w in wavs.items()}, self.sample_rate, "given stems")
        wavs = {s: w[:samples] for s, w in wavs.items()}
        warnings = [f"given stem '{s}' is silent" for s, w in wavs.items() if is_silent(w)]
        # 2. the given stems' latents and mask
        stacked = torch.zeros(1, len(self.stems), samples)
        mask = torch.zeros(1, len(self.stems), 1, 1, 1)
        for s, w in wavs.items():
            stacked[0, self.stems.index(s)] = w
            mask[0, self.stems.index(s)] = 1.0
        x0 = self.codec.encode(stacked)
        # 3. the condition: the prompt, else the given mix
        given_mix = stacked.sum(1)
        cond = None
        if prompt:
            cond = self.conditioner.text([prompt])
        elif self.conditional and not is_silent(given_mix):
            cond = self.conditioner.audio(given_mix)
        # 4. sample with the given stems imputed and decode
        wav, info = self._sample(samples, cond, opts, known=(x0, mask.to(x0)), callback=callback)
        keep = [s for s in self.stems if s in wavs or s in want_names]
        info = self._info("arrange", opts, given=given_names, want=want_names, prompt=prompt,
                          condition="text" if prompt else "given-mix" if cond is not None else "none",
                          warnings=warnings, **info)
        # 5. at the given files' rate and channels, the given stems as they came
        rate = output_rate or max(a.sample_rate for a in originals.values())
        channels = output_channels or max(a.channels for a in originals.values())
        at_rate = [len(a.data) for a in originals.values() if a.sample_rate == rate]
        length = min(at_rate) if at_rate else round(samples * rate / self.sample_rate)

        def rendered(s: str) -> torch.Tensor:
            if s in originals:
                return conform(torch.from_numpy(originals[s].data.T), originals[s].sample_rate, rate, channels, length)
            return conform(wav[self.stems.index(s)][None], self.sample_rate, rate, channels, length)

        subtypes = [a.subtype for a in originals.values() if a.subtype]
        widest = max(subtypes, key=list(SUBTYPES).index) if subtypes else None  # SUBTYPES runs narrow to wide
        return as_output({s: rendered(s) for s in keep}, rate, info, widest)

    def separate(self, mixture: AudioLike, *, sample_rate: int | None = None, output_rate: int | None = None,
                 output_channels: int | None = None, options: SeparationOptions | None = None,
                 callback: Callback = None, **overrides: Any) -> MultiTrackOutput:
        """Separate a mixture into stems with MSDM's ``dirac`` or ``gaussian`` posterior sampler, or
        ours, ``consistency``: gaussian plus a mel-domain mixture-consistency gradient through the
        decoder (``overrides``: :class:`SeparationOptions` fields).

        The model is conditioned on the CLAP embedding of the mixture itself (what it was trained on).
        ``wiener`` (default) turns the decoded stems into soft masks over the mixture's STFT, so the
        outputs keep the mixture's phase and sum back to it (+35 dB SI-SDRi on the demo: docs/separation.md).
        """
        # 1. options and the mixture
        check_output_shape(output_rate, output_channels)
        opts = self._resolve(options, overrides, "separate")
        mix = to_mono_tensor(mixture, sample_rate, self.sample_rate, "mixture")
        if is_silent(mix):
            raise InputError(f"{audio_name(mixture, 'mixture')}: is silent", "give a mixture with audible content")
        g = torch.Generator().manual_seed(opts.seed)
        sigmas = karras_sigmas(opts.steps, opts.sigma_min, opts.sigma_max)
        chunks = self.codec.sample_windows(mix.shape[-1])
        joined = OverlapAdd(len(self.stems), mix.shape[-1])
        t0, decode_s = time.perf_counter(), 0.0
        # 2. chunk_batch chunks at a time through the model (the track stays on the CPU): encode,
        # sample the stems, decode, overlap-add
        groups = [chunks[k:k + opts.chunk_batch] for k in range(0, len(chunks), opts.chunk_batch)]
        for n, group in enumerate(groups):
            pieces = torch.stack([mix[c.start:c.stop] for c in group])
            z = self._separate_chunks(pieces, opts, sigmas, g, per_group(callback, n, len(groups)))
            t1 = time.perf_counter()
            if callback is not None:
                callback({"stage": "decoding"})
            for chunk, wav in zip(group, self.codec.decode(z, pieces.shape[-1])):
                joined.add(chunk, wav)
            decode_s += time.perf_counter() - t1
        wav = joined.result()
        # 3. the Wiener post-filter
        if opts.wiener:
            wav = wiener_filter(wav, mix)
        sample_s = time.perf_counter() - t0 - decode_s
        info = self._info("separate", opts, mixture=audio_name(mixture, None), chunks=len(chunks),
                          **({"pinned_stem": self.stems[opts.source % len(self.stems)]} if opts.method == "dirac" else {}),
                          timings=dict(sample_s=round(sample_s, 3), decode_s=round(decode_s, 3)))
        return self._output(wav, self.stems, info, output_rate, output_channels)

    # -- the steps the tasks share ---------------------------------------------------------------
    def _resolve(self, options, overrides: dict[str, Any], task: str):
        if options is not None and overrides:
            raise InputError(f"{{options}} and {', '.join(overrides)}: give one or the other",
                             "set them on the options object", options=NAME_ONLY)
        if options is not None:
            return options
        return self.separation_options(**overrides) if task == "separate" else self.sampling_options(task, **overrides)

    def _samples(self, duration: float | None) -> int:
        seconds = self.config.audio.segment_seconds if duration is None else duration
        if not (seconds > 0 and np.isfinite(seconds)):
            raise InputError("{duration}: must be a positive number of seconds", duration=duration)
        if seconds > MAX_SECONDS:
            raise InputError(f"{{duration}}: longer than the {MAX_SECONDS:.0f} s one result may be",
                             f"make it in parts of at most {MAX_SECONDS:.0f} s", duration=duration)
        return max(1, round(seconds * self.sample_rate))

    def _sample(self, samples: int, cond: torch.Tensor | None, opts: SamplingOptions, *,
                known: Known | None = None, callback: Callback = None) -> tuple[torch.Tensor, dict]:
        """``[S, samples]`` of audio: latent windows sampled under guidance, then decoded."""
        wav, info = self._sample_batch(samples, cond, opts, [opts.seed], known=known, callback=callback)
        return wav[0], info

    def _sample_batch(self, samples: int, cond: torch.Tensor | None, opts: SamplingOptions, seeds: Sequence[int], *,
                      known: Known | None = None, callback: Callback = None) -> tuple[torch.Tensor, dict]:
        """``[B, S, samples]``: one item per seed, through the UNet together, each drawn from its own
        generator (an item is what its seed gives alone, to float rounding)."""
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        g = gens if len(gens) > 1 else gens[0]
        latent_frames = self.codec.latent_frames(samples)
        shape = (len(gens), len(self.stems), self.unet.config.latent_channels, latent_frames, self.codec.latent_bins)
        uncond = self.conditioner.null()
        guidance = opts.guidance
        if cond is None:
            cond, guidance = uncond, 1.0
        windows = self.codec.latent_windows(latent_frames)
        t0 = time.perf_counter()
        takes_given = self.unet.config.arrangement  # else the known latents are only imputed

        def model_for(k: Known | None):
            return cfg_model_fn(self.unet, cond, uncond, guidance, given=k if takes_given else None,
                                given_scale=opts.given_guidance)

        z = sample_windows(model_for, shape, windows, self.scheduler, opts, generator=g, device=self.device,
                           known=known, callback=callback)
        t1 = time.perf_counter()
        if callback is not None:
            callback({"stage": "decoding"})
        # item by item: a vocoder may depend on what else is in its batch (Griffin-Lim's random start does)
        wav = fade_ends(torch.cat([self.codec.decode(z[k:k + 1], samples) for k in range(len(z))]), self.sample_rate)
        timings = dict(sample_s=round(t1 - t0, 3), decode_s=round(time.perf_counter() - t1, 3))
        return wav, dict(windows=len(windows), timings=timings)

    def _separate_chunks(self, pieces: torch.Tensor, opts: SeparationOptions, sigmas: torch.Tensor,
                         g: torch.Generator, callback: Callback) -> torch.Tensor:
        """The stems' latents ``[G, S, C, T, F]`` of ``G`` chunks ``[G, samples]`` of the mixture, sampled
        as one batch (each chunk is its own item: its own mixture, CLAP embedding and noise)."""
        m = self.codec.encode(pieces[:, None])
        kwargs: dict[str, Any] = {"source": opts.source} if opts.method == "dirac" else {"gamma_coeff": opts.gamma}
        if opts.method == "consistency":
            mel = self.codec.mel(pieces.to(self.device), self.codec.mel_frames(pieces.shape[-1]))
            kwargs |= dict(decode_mel=self.codec.decode_mel, guidance=opts.consistency, mixture_mel=mel)
        cond = self.conditioner.audio(pieces) if self.conditional else None
        score = eps_score(cfg_model_fn(self.unet, cond, None, 1.0), opts.sigma_max,
                          self.scheduler.config.num_train_timesteps)
        noise = torch.randn((len(pieces), len(self.stems), *m.shape[2:]), generator=g).to(self.device)
        with torch.no_grad():
            return sample_separation(separation_differential(opts.method, score, m, **kwargs), noise, sigmas,
                                     s_churn=opts.s_churn, num_resamples=opts.resamples, generator=g, callback=callback)

    def _info(self, task: str, opts: SamplingOptions | SeparationOptions, **extra) -> dict:
        src = self.source
        return dict(task=task, model=self.config.name, source=src.source if src else None,
                    revision=src.revision if src else None, mtldm_version=__version__,
                    device=str(self.device), dtype=str(self.dtype).removeprefix("torch."), compiled=self.compiled,
                    options=opts.record(), **extra)

    def _output(self, wav: torch.Tensor, keep: Sequence[str], info: dict, output_rate: int | None = None,
                output_channels: int | None = None) -> MultiTrackOutput:
        rate, channels = output_rate or self.sample_rate, output_channels or 1
        length = round(wav.shape[-1] * rate / self.sample_rate)
        stems = {s: conform(wav[self.stems.index(s)][None], self.sample_rate, rate, channels, length) for s in keep}
        return as_output(stems, rate, info)


def per_group(callback: Callback, n: int, groups: int) -> Callback:
    """Report group ``n``'s steps as steps of all ``groups`` (stage reports as they are)."""
    if callback is None:
        return None
    report = callback
    return lambda info: report(info if "stage" in info else info | {"i": n * info["total"] + info["i"],
                                                                     "total": groups * info["total"]})


def as_output(stems: Mapping[str, torch.Tensor], rate: int, info: dict, subtype: str | None = None) -> MultiTrackOutput:
    """``[C, N]`` tensors as a result: mono stems as ``[N]`` arrays."""
    arrays = {s: (w[0] if w.shape[0] == 1 else w).numpy().astype(np.float32) for s, w in stems.items()}
    return MultiTrackOutput(stems=arrays, sample_rate=rate, info=info | {"stems": list(stems)}, subtype=subtype)


OUTPUT_RATES = (8000, 192000)


def check_output_shape(output_rate: int | None, output_channels: int | None) -> None:
    """Refuse an output rate or channel count no audio file has."""
    lo, hi = OUTPUT_RATES
    if output_rate is not None and not (isinstance(output_rate, int) and lo <= output_rate <= hi):
        raise InputError(f"{{output_rate}}: must be a whole number of Hz from {lo} to {hi}", output_rate=output_rate)
    if output_channels is not None and not (isinstance(output_channels, int) and 1 <= output_channels <= MAX_CHANNELS):
        raise InputError(f"{{output_channels}}: must be from 1 to {MAX_CHANNELS}", output_channels=output_channels)
