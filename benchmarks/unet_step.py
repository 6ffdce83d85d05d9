"""What one demo-v2 UNet training step costs on a CPU, part by part, for candidate UNets and windows.

    python benchmarks/unet_step.py                      # configs/demo-v2.yaml's UNet and variants
    python benchmarks/unet_step.py --threads 2

The parts of a step, as `mtldm train`'s unet stage runs them: the log-mel and VAE encode of the
batch's stems, the CLAP embedding of its mixes, and the UNet's forward and backward with the
arrangement inputs and an AdamW update. Each part is timed on the same random batch, median of 3
after one warm-up, in one process, side by side: read ratios (what a latent cache would save,
what a variant costs), not absolute times, on a loaded machine. The VAE and CLAP are the committed
runs' (`runs/demo-v2/vae/vae`, `runs/demo-v2/clap/clap`). A step that encodes its
batch is set beside one that draws it from the latent cache (`unet.cache_stride_frames`), and the
UNet's step under bf16 autocast (`unet.mixed_precision`) beside float32. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from mtldm_cli.audio import MelFrontEnd
from mtldm_cli.model import MultiTrackUNet, UNetConfig
from mtldm_cli.train import load_config
from mtldm_cli.train.loop import posterior_sample, stem_mels
from mtldm_cli.train.stages import MixClap, arrangement_masks

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict] = {
    "demo-v2 config (10.24 s, 32 ch, attention at 4x and 8x)": {},
    "demo-v2 config, UNet under bf16 autocast": {"bf16": True},
    "2.05 s windows": {"window_frames": 128},
    "5.12 s windows": {"window_frames": 320},
    "attention at 8x only": {"unet": {"attention_resolutions": [8]}},
    "48 channels": {"unet": {"model_channels": 48}},
    "2 res blocks": {"unet": {"num_res_blocks": 2}},
}


def timed(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def measure(cfg, vae, clap: MixClap, front: MelFrontEnd, change: dict) -> dict:
    """One variant's parts, each on the same random batch."""
    frames = change.get("window_frames", cfg.unet.window_frames or cfg.audio.segment_frames)
    unet_cfg = UNetConfig(**(cfg.unet.unet.model_dump() | change.get("unet", {})))
    b, s = cfg.unet.batch_size, len(cfg.audio.stems)
    g = torch.Generator().manual_seed(0)
    stems = torch.randn(b, s, frames * cfg.audio.hop_length, generator=g) * 0.1

    def encode():
        with torch.no_grad():
            return posterior_sample(vae.encode(stem_mels(front, stems, frames)).latent_dist, g)

    z = encode()
    x0 = z.reshape(b, s, *z.shape[1:])
    torch.manual_seed(0)
    unet = MultiTrackUNet(unet_cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    t = torch.randint(0, 1000, (b,), generator=g)
    mask = arrangement_masks(tuple(x0.shape), 0.5, 0.2, g)
    cond = clap.embed(stems.sum(1), g) if unet_cfg.cond_dim else None

    def unet_step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=change.get("bf16", False)):
            eps = unet(x0, t, cond, given=(x0, mask) if unet_cfg.arrangement else None)
        ((eps.float() - x0) ** 2).mean().backward()
        opt.step()

    mean, std = x0.half(), (x0.abs() * 0.01).half()

    def cache_draw():  # what unet.cache_stride_frames leaves of the encoders: a posterior sample
        return mean.float() + std.float() * torch.randn(mean.shape, generator=g)

    parts = {"mel + VAE encode": timed(encode),
             "CLAP embedding": timed(lambda: clap.embed(stems.sum(1), g)) if cond is not None else 0.0,
             "latent cache draw": timed(cache_draw),
             "UNet forward + backward + AdamW": timed(unet_step)}
    unet_s = parts["UNet forward + backward + AdamW"]
    return {"seconds_of_audio": round(frames * cfg.audio.hop_length / cfg.audio.sample_rate, 2),
            "latent": list(x0.shape[2:]), "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "seconds": parts,
            "step_seconds_encoding": round(parts["mel + VAE encode"] + parts["CLAP embedding"] + unet_s, 3),
            "step_seconds_cached": round(parts["latent cache draw"] + unet_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-v2.yaml")
    ap.add_argument("--vae", type=Path, default=ROOT / "runs" / "demo-v2" / "vae" / "vae")
    ap.add_argument("--clap", type=Path, default=ROOT / "runs" / "demo-v2" / "clap" / "clap")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="the variants to time (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    cfg = load_config(args.config)
    vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False)
    clap = MixClap(args.clap, cfg.audio.sample_rate, cfg.unet.null_fraction, torch.device("cpu"))
    front = MelFrontEnd(cfg.audio)
    report: dict = {**machine_report(), "threads": args.threads, "batch": cfg.unet.batch_size, "variants": {}}
    for name, change in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        report["variants"][name] = measure(cfg, vae, clap, front, change)
        print(name, report["variants"][name], file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
