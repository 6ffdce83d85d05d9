"""Sampling cost on the full-size architecture (random weights), and sampler accuracy.

    python benchmarks/sampling.py                      # CPU, 2 threads
    python benchmarks/sampling.py --device cuda --dtype bf16 --compile
    python benchmarks/sampling.py --skip forward,generate,accuracy --precision demo   # precision on a trained model

1. One UNet forward (CFG batch of 2) on one 10.24 s, 4-stem latent [1, 4, 8, 256, 16].
2. A whole `generate` (UNet + VAE decode + HiFi-GAN) at the paper preset (DDIM 200, eta 1) and the
   fast default (DPM-Solver++ 25), run one after the other in this process; their ratio.
   On a CPU the generate runs use --generate-seconds of audio (default 0.32 s) so the paper preset
   finishes in minutes: the ratio is what to read there, not the absolute times.
3. Sampler accuracy: how far each deterministic sampler's result lies from a 999-step DDIM (eta 0,
   every training timestep) solution of the same ODE, from the same noise, on --accuracy-model
   (default tiny-random: a trained model is needed for a verdict on audio quality).
4. Precision and compilation on a trained model (--precision MODEL, e.g. demo): for fp32, bf16, fp16
   (each also compiled, or with channels-last 3D weights), side by side in this process: UNet forwards per second at the model's segment
   (CFG batch of 2), and how far one seed's generated mix (DPM-Solver++ 25) lies from fp32's: relative
   L2 of the waveform (Griffin-Lim's phase search magnifies any change) and mean absolute log-mel
   difference (what a user hears change).

Prints a JSON report (machine, date, settings, figures). Weights are random: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from mtldm_cli.config import AudioConfig, PipelineConfig
from mtldm_cli.model import MultiTrackUNet, UNetConfig


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_full_random(folder: Path, small: bool = False) -> Path:
    """The published architecture with random weights: VAE, UNet, HiFi-GAN; a small CLAP (512-d).
    ``small``: narrow versions of all three instead, to check in seconds that the script runs."""
    from diffusers import AutoencoderKL
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig, RobertaTokenizer, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from mtldm_cli import tiny
    from mtldm_cli.components import quiet_libraries
    from mtldm_cli.convert import clap_processor
    from mtldm_cli.samplers import training_scheduler

    quiet_libraries()
    torch.manual_seed(0)
    audio = AudioConfig()
    width = 8 if small else 128
    AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(width, 2 * width, 4 * width),
                  norm_num_groups=8 if small else 32,
                  layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, sample_size=1024).save_pretrained(folder / "vae")
    unet = MultiTrackUNet(UNetConfig(model_channels=16, channel_mult=(1, 2), attention_resolutions=(2,),
                                     num_head_channels=8, norm_groups=8) if small else UNetConfig())
    tiny.perturb_zero_init(unet)
    unet.save_pretrained(folder / "unet")
    SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=32 if small else 1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False)).save_pretrained(folder / "vocoder")
    training_scheduler().save_pretrained(folder / "scheduler")
    # CLAP runs once per call, not per step: a small one with the real 512-d output suffices here.
    cfg = PipelineConfig(name="full-random", description="benchmark only", audio=audio, clap_max_seconds=2.0)
    clap_audio = ClapAudioConfig(num_mel_bins=16, window_size=4, spec_size=64, patch_size=2, patch_stride=[2, 2],
                                 hidden_size=16, patch_embeds_hidden_size=8, projection_dim=512, depths=[1, 1],
                                 num_attention_heads=[2, 2], num_hidden_layers=2)
    clap_text = ClapTextConfig(vocab_size=262, hidden_size=16, projection_dim=512, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32, max_position_embeddings=130)
    ClapModel(ClapConfig(text_config=clap_text.to_dict(), audio_config=clap_audio.to_dict(),
                         projection_dim=512)).save_pretrained(folder / "clap")
    vocab, merges = tiny.byte_level_vocab(folder / "_vocab")
    RobertaTokenizer(str(vocab), str(merges), model_max_length=128).save_pretrained(folder / "_tok")
    clap_processor(folder / "_tok", mels=16, max_seconds=cfg.clap_max_seconds).save_pretrained(folder / "clap")
    (folder / "pipeline.json").write_text(cfg.model_dump_json(indent=2))
    return folder


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_forward(pipe, args) -> dict:
    unet = pipe.unet
    x = torch.randn(2, 4, 8, 256, 16, device=pipe.device)
    t = torch.tensor([500, 500], device=pipe.device)
    y = torch.randn(2, 512, device=pipe.device)
    times = []
    with torch.no_grad():
        for _ in range(args.warmup + args.repeats):
            sync(args.device)
            t0 = time.perf_counter()
            unet(x, t, y)
            sync(args.device)
            times.append(time.perf_counter() - t0)
    return {"shape": [2, 4, 8, 256, 16], "seconds": [round(s, 3) for s in times[args.warmup:]],
            "warmup": args.warmup, "peak_rss_mb": round(peak_rss_mb()), **gpu_peak(args.device)}


def gpu_peak(device: str) -> dict:
    if device != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return {"peak_cuda_mb": round(peak)}


def time_generate(pipe, args) -> dict:
    out = {}
    for preset in ("paper", "fast"):
        sync(args.device)
        t0 = time.perf_counter()
        res = pipe.generate("a song", duration=args.generate_seconds, preset=preset, seed=0)
        sync(args.device)
        out[preset] = {"seconds": round(time.perf_counter() - t0, 3), "sampler": res.info["options"]["sampler"],
                       "steps": res.info["options"]["steps"], "peak_rss_mb": round(peak_rss_mb()), **gpu_peak(args.device)}
    out["paper_over_fast"] = round(out["paper"]["seconds"] / out["fast"]["seconds"], 2)
    out["audio_seconds"] = args.generate_seconds
    return out


def accuracy(model: str, steps_list: list[int]) -> dict:
    """Relative L2 distance of each sampler's final latent from a 999-step DDIM (eta 0) solution."""
    from mtldm_cli import MultiTrackPipeline
    from mtldm_cli.samplers import cfg_model_fn
    from mtldm_cli.sampling import denoise

    pipe = MultiTrackPipeline.from_pretrained(model, device="cpu")
    g = torch.Generator().manual_seed(0)
    shape = (1, len(pipe.stems), pipe.unet.config.latent_channels, pipe.codec.window_latent_frames,
             pipe.codec.latent_bins)
    noise = torch.randn(shape, generator=g)
    cond = pipe.conditioner.text(["a song"]) if pipe.conditional else None
    fn = cfg_model_fn(pipe.unet, cond, pipe.conditioner.null(), pipe.config.sampling.guidance)

    def run(sampler, steps):
        opts = pipe.sampling_options(sampler=sampler, steps=steps, eta=0.0, seed=0)
        with torch.no_grad():
            return denoise(fn, noise.clone(), pipe.scheduler, opts, generator=None)

    ref = run("ddim", 999)  # every training timestep (steps_offset 1 skips t=0)
    rows = {}
    for sampler in ("ddim", "dpm++"):
        for n in steps_list:
            rows[f"{sampler}-{n}"] = round(float((run(sampler, n) - ref).norm() / ref.norm()), 5)
    return {"model": model, "reference": "ddim-999 (eta 0)", "relative_l2": rows}


def one_take(pipe, seed: int) -> tuple:
    """One seed's 10.24 s mix (fast preset) as float64 samples and as the model's log-mel."""
    mix = pipe.generate(seed=seed, preset="fast").mix
    mel = pipe.codec.mel(torch.from_numpy(mix).float()[None].to(pipe.device), pipe.codec.mel_frames(len(mix)))
    return mix.astype("float64"), mel


def distance(take: tuple, reference: tuple) -> dict:
    """How far one take lies from another: waveform relative L2, mean absolute log-mel difference."""
    import numpy as np

    (mix, mel), (ref_mix, ref_mel) = take, reference
    return {"mix_relative_l2": round(float(np.linalg.norm(mix - ref_mix) / np.linalg.norm(ref_mix)), 5),
            "mix_logmel_l1": round(float((mel - ref_mel).abs().mean()), 5)}


def precision(model: str, variants: list[str], device: str, repeats: int) -> dict:
    """Each variant (``fp32``, ``bf16``, ``fp16``, with ``+compile`` and/or ``+cl3d``: channels-last
    3D weights) of ``model``: forward speed and its distance from fp32 on one seed."""
    from mtldm_cli import MultiTrackPipeline

    rows: dict = {}
    reference = None
    for variant in variants:
        dtype, *extras = variant.split("+")
        pipe = MultiTrackPipeline.from_pretrained(model, device=device, torch_dtype=dtype, compile="compile" in extras)
        if "cl3d" in extras:  # channels-last 3D weights: a candidate, not a library option until it pays
            pipe.unet.to(memory_format=torch.channels_last_3d)
        shape = (2, len(pipe.stems), pipe.unet.config.latent_channels, pipe.codec.window_latent_frames, pipe.codec.latent_bins)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(pipe.device)
        t = torch.full((2,), 500, device=pipe.device)
        cond = pipe.conditioner.null().expand(2, -1) if pipe.conditional else None
        with torch.no_grad():
            sync(device)
            t0 = time.perf_counter()
            pipe.unet(x, t, cond)  # compiling, for a compiled variant
            sync(device)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(repeats):
                pipe.unet(x, t, cond)
            sync(device)
            per = (time.perf_counter() - t0) / repeats
        take = one_take(pipe, seed=0)
        row = {"first_forward_s": round(first, 3), "forward_s": round(per, 4), "forwards_per_s": round(1 / per, 2),
               **gpu_peak(device)}
        if reference is None:
            reference = take
            # the scale to read the distances on: the same model and precision, another seed
            row["another_seed"] = distance(one_take(pipe, seed=1), take)
        else:
            row |= {f"{k}_to_fp32": v for k, v in distance(take, reference).items()}
            row["speedup_over_fp32"] = round(rows[variants[0]]["forward_s"] / per, 2)
        rows[variant] = row
        print(variant, json.dumps(row), file=sys.stderr)
        del pipe
    return {"model": model, "shape": list(shape), "repeats": repeats, "variants": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--sdpa", default="auto", choices=["auto", "math"],
                    help="math: force SDPA's math backend (what the UNet got before its heads were contiguous)")
    ap.add_argument("--small", action="store_true", help="a narrow random model: checks that the script runs, times nothing real")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--generate-seconds", type=float, default=None, help="default 0.32 on CPU, 10.24 on CUDA")
    ap.add_argument("--accuracy-model", default="tiny-random")
    ap.add_argument("--accuracy-steps", default="10,15,25,50")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: forward,generate,accuracy")
    ap.add_argument("--precision", default=None, metavar="MODEL", help="also compare precisions on this trained model")
    ap.add_argument("--variants", default="fp32,bf16,fp16,fp32+cl3d,fp32+compile,bf16+compile")
    ap.add_argument("--precision-repeats", type=int, default=10)
    args = ap.parse_args()
    args.generate_seconds = args.generate_seconds or (10.24 if args.device == "cuda" else 0.32)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    report = {**machine_report(), "device": args.device, "threads": torch.get_num_threads(),
              "dtype": args.dtype, "compile": args.compile, "small": args.small, "sdpa": args.sdpa}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        if not {"forward", "generate"} <= skip:
            from mtldm_cli import MultiTrackPipeline

            t0 = time.perf_counter()
            pipe = MultiTrackPipeline.from_folder(build_full_random(Path(tmp), args.small)).to(args.device, args.dtype)
            if args.compile:
                pipe.compile()
            report["build_s"] = round(time.perf_counter() - t0, 1)
            report["unet_parameters"] = sum(p.numel() for p in pipe.unet.parameters())
            if "forward" not in skip:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.MATH) if args.sdpa == "math" else contextlib.nullcontext():
                    report["unet_forward_cfg_batch"] = time_forward(pipe, args)
                print(json.dumps(report["unet_forward_cfg_batch"]), file=sys.stderr)
            if "generate" not in skip:
                report["generate"] = time_generate(pipe, args)
            del pipe
        if "accuracy" not in skip:
            report["accuracy"] = accuracy(args.accuracy_model, [int(s) for s in args.accuracy_steps.split(",")])
        if args.precision:
            report["precision"] = precision(args.precision, args.variants.split(","), args.device, args.precision_repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
