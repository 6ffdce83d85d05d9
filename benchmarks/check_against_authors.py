"""Compare our UNet with the authors' own ``openaimodel.UNetModel`` (not part of the test suite).

    git clone https://github.com/karchkha/mt-musicldm /tmp/mt-musicldm
    python benchmarks/check_against_authors.py --repo /tmp/mt-musicldm
    python benchmarks/check_against_authors.py --repo /tmp/mt-musicldm --speed --frames 64 --threads 2
    python benchmarks/check_against_authors.py --repo /tmp/mt-musicldm --speed --device cuda --dtype bf16

Needs only their ``src/latent_diffusion`` folder on disk; nothing of theirs is vendored here.
Prints, for the published config with and without CLAP: whether the state-dict names and shapes
are identical and both parameter counts; then, on a small config with random weights loaded into
both, the largest absolute difference between the two forwards.

``--speed`` times instead one forward of each UNet at the published size (with CLAP), on the same
input ``[2, 4, 8, --frames, 16]`` (a CFG batch; 256 frames = 10.24 s), each in a process of its own
so that peak memory is each one's: seconds per forward after a warm-up, and the peak (resident set
on a CPU, allocated memory on CUDA). ``--dtype bf16|fp16`` runs both under ``torch.autocast``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtldm_cli.model import MultiTrackUNet, UNetConfig


def authors_unet_class(repo: Path):
    sys.path.insert(0, str(repo / "src"))
    # Their package imports einops (unused by UNetModel's forward) and an instantiate helper (unused here).
    sys.modules.setdefault("einops", types.SimpleNamespace(rearrange=None, repeat=None))
    sys.modules["latent_diffusion.util"] = types.SimpleNamespace(instantiate_from_config=None)
    from latent_diffusion.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel


PUBLISHED = dict(image_size=64, extra_film_use_concat=True, in_channels=4, out_channels=4, model_channels=192, dims=3,
                 attention_resolutions=[8, 4, 2], num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_head_channels=32)


def time_one(which: str, args) -> dict:
    """One UNet (``ours`` or ``theirs``) at the published size with CLAP: seconds per forward, peak memory."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.device(device):
        model = (authors_unet_class(args.repo)(extra_film_condition_dim=512, **PUBLISHED) if which == "theirs"
                 else MultiTrackUNet(UNetConfig(cond_dim=512))).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, args.frames, 16, generator=g).to(device)
    t, y = torch.tensor([500, 500], device=device), torch.randn(2, 512, generator=g).to(device)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    amp = torch.autocast(device.type, dtype=half) if half else torch.autocast(device.type, enabled=False)
    times = []
    with torch.no_grad(), amp:
        for _ in range(args.warmup + args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x, t, y=y) if which == "theirs" else model(x, t, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": [round(s, 4) for s in times[args.warmup:]], "forward_s": round(min(times[args.warmup:]), 4),
            "peak_mb": round(peak), "peak_kind": "cuda allocated" if device.type == "cuda" else "resident set"}


def speed(args) -> dict:
    """Ours against theirs, each measured in a child process of this script."""
    from benchmarks.common import machine_report

    rows = {}
    for which in ("ours", "theirs"):
        cmd = [sys.executable, __file__, "--repo", str(args.repo), "--one", which, "--frames", str(args.frames),
               "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        rows[which] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    ours, theirs = rows["ours"], rows["theirs"]
    ratios = {}
    if "forward_s" in ours and "forward_s" in theirs:
        ratios = {"theirs_over_ours_time": round(theirs["forward_s"] / ours["forward_s"], 2),
                  "theirs_over_ours_peak": round(theirs["peak_mb"] / ours["peak_mb"], 2)}
    return {**machine_report(), "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "input": [2, 4, 8, args.frames, 16], "ours": ours, "theirs": theirs, **ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True, help="a checkout of karchkha/mt-musicldm")
    ap.add_argument("--speed", action="store_true", help="time both UNets at the published size instead")
    ap.add_argument("--one", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=256, help="latent frames of the timed input (256 = 10.24 s)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(time_one(args.one, args)))
        return
    if args.speed:
        print(json.dumps(speed(args), indent=2))
        return
    UNetModel = authors_unet_class(args.repo)
    report = {}
    for cond in (512, None):
        with torch.device("meta"):
            theirs = UNetModel(image_size=64, extra_film_condition_dim=cond, extra_film_use_concat=True,
                               in_channels=4, out_channels=4, model_channels=192, dims=3,
                               attention_resolutions=[8, 4, 2], num_res_blocks=2, channel_mult=[1, 2, 3, 5],
                               num_head_channels=32)
            ours = MultiTrackUNet(UNetConfig(cond_dim=cond))
        same = {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
        report["clap" if cond else "uncond"] = {
            "same_names_and_shapes": same,
            "parameters_theirs": sum(p.numel() for p in theirs.parameters()),
            "parameters_ours": sum(p.numel() for p in ours.parameters()),
        }
    torch.manual_seed(0)
    theirs = UNetModel(image_size=64, extra_film_condition_dim=24, extra_film_use_concat=True, in_channels=4,
                       out_channels=4, model_channels=32, dims=3, attention_resolutions=[4, 2], num_res_blocks=2,
                       channel_mult=[1, 2, 3], num_head_channels=16).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # their output layers start at zero
    ours = MultiTrackUNet(UNetConfig(model_channels=32, channel_mult=(1, 2, 3), attention_resolutions=(4, 2),
                                     num_head_channels=16, cond_dim=24)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, t, y = torch.randn(2, 4, 8, 32, 16), torch.tensor([10, 700]), torch.randn(2, 24)
    with torch.no_grad():
        a, b = theirs(x, t, y=y), ours(x, t, y)
    report["small_config_forward"] = {"max_abs_diff": float((a - b).abs().max()), "mean_abs_output": float(a.abs().mean())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
