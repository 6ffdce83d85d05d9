"""Many jobs, one model load: what batch mode and the fast start buy, measured side by side.

    python benchmarks/batch.py --out benchmarks/results/<date>-batch-cpu2.json

1. start-up: wall time and peak memory (max RSS) of `mtldm --help` and `mtldm models`, each in a
   fresh process;
2. CLI overhead: one default `demo` generate, total wall minus the sampling and decoding it records;
   and what its imports cost, each chain in a fresh interpreter (torch, diffusers' scheduler and VAE);
3. N demo generations: N separate `mtldm generate` processes against one `mtldm generate --num N`
   (the ratio: the issue's goal is at least 1.5x);
4. batched UNet forwards on the demo model: clips per second at batch 1, 2, 4, 8 (--batches).
   ``--only-unet --device cuda --dtype bf16 --batches 1,8,32`` runs only this part, e.g. on a GPU.
Every timing comes from this one run on this machine; compare ratios, not seconds across machines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_report  # noqa: E402

MTLDM = [sys.executable, "-m", "mtldm_cli"]


def run(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one fresh ``mtldm`` process, and what it printed."""
    t = time.perf_counter()
    done = subprocess.run([*MTLDM, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"mtldm {' '.join(args)} failed: {done.stderr[-500:]}")
    return wall, done


def startup(repeats: int) -> dict:
    out = {}
    for name, args in (("help", ["--help"]), ("models", ["models"])):
        walls = [run(args)[0] for _ in range(repeats)]
        # ru_maxrss of children is the largest of any child so far: memory is measured in a fresh wrapper
        probe = subprocess.run([sys.executable, "-c",  # the wrapper's children: only this mtldm
                                "import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
                                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", *MTLDM, *args],
                               capture_output=True, text=True)
        peak = int(probe.stdout.strip()) / 1024
        out[name] = {"wall_s_median": round(sorted(walls)[len(walls) // 2], 3), "peak_rss_mb": round(peak, 1)}
    return out


# What a demo generate's start-up imports, each chain in a fresh interpreter (wall seconds, median):
# the overhead's floor with diffusers on the inference path.
IMPORTS = {
    "python": "pass",
    "torch": "import torch",
    "torch + diffusers' DDIM scheduler": "import torch, diffusers.schedulers.scheduling_ddim",
    "torch + diffusers' AutoencoderKL": "import torch, diffusers.models.autoencoders.autoencoder_kl",
    "torch + torch._dynamo": "import torch, torch._dynamo",
    "mtldm's pipeline (all of the above)": "import mtldm_cli.pipeline, mtldm_cli.components, diffusers.models.autoencoders.autoencoder_kl",
}


def imports(repeats: int) -> dict:
    out = {}
    for name, code in IMPORTS.items():
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            walls.append(time.perf_counter() - t)
        out[name] = round(sorted(walls)[len(walls) // 2], 2)
    return out


def generations(model: str, n: int, steps: int | None, work: Path) -> dict:
    extra = ["--steps", str(steps)] if steps else []
    t = time.perf_counter()
    single_infos = []
    for k in range(n):
        _, done = run(["generate", "--model", model, "--seed", str(k), "--out", str(work / f"single-{k}"), "--json", *extra])
        single_infos.append(json.loads(done.stdout)["info"])
    singles = time.perf_counter() - t
    t = time.perf_counter()
    _, done = run(["generate", "--model", model, "--num", str(n), "--seed", "0", "--batch-size", str(min(n, 4)),
                      "--out", str(work / "batch"), "--json", *extra])
    batch = time.perf_counter() - t
    first = single_infos[0]
    work_s = first["timings"]["sample_s"] + first["timings"]["decode_s"]
    return {"n": n, "separate_calls_s": round(singles, 2), "one_batch_call_s": round(batch, 2),
            "speedup": round(singles / batch, 2),
            "one_call": {"total_s": first["total_s"], "sample_s": first["timings"]["sample_s"],
                         "decode_s": first["timings"]["decode_s"], "overhead_s": round(first["total_s"] - work_s, 2)}}


def unet_throughput(model: str, batches: list[int], repeats: int, device: str = "cpu", dtype: str = "fp32") -> dict:
    import torch

    from mtldm_cli import MultiTrackPipeline

    pipe = MultiTrackPipeline.from_pretrained(model, device=device, torch_dtype=dtype)

    def sync() -> None:
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()

    unet, codec = pipe.unet, pipe.codec
    frames = codec.window_latent_frames
    out = {}
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, len(pipe.stems), unet.config.latent_channels, frames, codec.latent_bins, device=pipe.device)
            t_in = torch.full((b,), 500, device=pipe.device)
            unet(x, t_in, None)  # warm-up
            sync()
            t = time.perf_counter()
            for _ in range(repeats):
                unet(x, t_in, None)
            sync()
            per_forward = (time.perf_counter() - t) / repeats
            out[str(b)] = {"forward_s": round(per_forward, 4), "clips_per_s": round(b / per_forward, 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--n", type=int, default=8, help="generations to compare")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only-unet", action="store_true", help="only the batched UNet forwards (e.g. on a GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batches", default="1,2,4,8")
    args = ap.parse_args()
    report = {"machine": machine_report()}
    batches = [int(b) for b in args.batches.split(",")]
    if args.only_unet:
        report["unet_forward"] = {"device": args.device, "dtype": args.dtype,
                                  **unet_throughput(args.model, batches, args.repeats, args.device, args.dtype)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return
    report["startup"] = startup(args.repeats)
    print(json.dumps(report["startup"]))
    report["imports_s"] = imports(args.repeats)
    print(json.dumps(report["imports_s"]))
    with tempfile.TemporaryDirectory() as work:
        report["generate"] = generations(args.model, args.n, args.steps, Path(work))
    print(json.dumps(report["generate"]))
    report["unet_forward"] = unet_throughput(args.model, batches, args.repeats)
    print(json.dumps(report["unet_forward"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
