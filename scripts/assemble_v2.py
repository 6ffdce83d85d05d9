"""Put demo v2's separately trained runs together into one model folder that `--model` loads.

    python scripts/assemble_v2.py /tmp/demo-v2
    python benchmarks/quality.py --model v1=demo --model v2=/tmp/demo-v2

The UNet run (runs/demo-v2/unet-vae6500: its VAE, CLAP, UNet, scheduler and pipeline.json) takes the Vocos of
the vocoder run (runs/demo-v2/vocoder-prior, its last export) in place of Griffin-Lim. The runs
train in their own folders because they train at the same time, on different cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--unet-run", type=Path, default=ROOT / "runs" / "demo-v2" / "unet-vae6500")
    ap.add_argument("--vocoder-run", type=Path, default=ROOT / "runs" / "demo-v2" / "vocoder-prior")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if args.out.exists():
        if not args.force:
            raise SystemExit(f"error: {args.out} exists; pass --force to replace it")
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for part in ("vae", "unet", "scheduler", "clap"):
        shutil.copytree(args.unet_run / part, args.out / part)
    shutil.copytree(args.vocoder_run / "training" / "vocoder-trained", args.out / "vocoder")
    pipe = json.loads((args.unet_run / "pipeline.json").read_text())
    kind = json.loads((args.vocoder_run / "training" / "config.json").read_text())["vocoder"]["kind"]
    (args.out / "pipeline.json").write_text(json.dumps({**pipe, "vocoder": kind}, indent=2))
    print(f"{args.out}: UNet of {args.unet_run}, {kind} of {args.vocoder_run}")


if __name__ == "__main__":
    main()
