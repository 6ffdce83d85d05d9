"""Put demo v2's separately trained runs together into one model folder that `--model` loads.

    python scripts/assemble_v2.py /tmp/demo-v2 [--sampling arrange_given_guidance=4]
    python benchmarks/quality.py --model v1=demo-v1 --model v2=/tmp/demo-v2

The UNet run (runs/demo-v2/unet-vae6500-step22750, the newest: its VAE, CLAP, UNet, scheduler and pipeline.json) takes the Vocos of
the vocoder run (runs/demo-v2/vocoder-prior-step21750, its last export) in place of Griffin-Lim. The runs
train in their own folders because they train at the same time, on different cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import ValidationError  # noqa: E402

from mtldm_cli.config import PipelineConfig  # noqa: E402
from mtldm_cli.vocoders import VocosConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--unet-run", type=Path, default=ROOT / "runs" / "demo-v2" / "unet-vae6500-step26750")
    ap.add_argument("--vocoder-run", type=Path, default=ROOT / "runs" / "demo-v2" / "vocoder-prior-step21750")
    ap.add_argument("--sampling", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the model's sampling defaults chosen by measurement, e.g. arrange_given_guidance=4 "
                         "(the run's config holds its training's; changing it would stop the run resuming)")
    ap.add_argument("--vocoder-option", nargs="*", default=[], metavar="KEY=VALUE",
                    help="decoding options of the Vocos chosen by measurement, as JSON values (its config.json), e.g. "
                         "'onset_reset_stems={\"drums\": {\"threshold\": 1.0, \"delay\": 128}}'")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    try:
        vocoder_options = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.vocoder_option)}
    except ValueError:
        raise SystemExit(f"error: --vocoder-option {' '.join(args.vocoder_option)}: each must be KEY=JSON, "
                         "e.g. onset_reset=1.0 'onset_reset_stems={\"drums\": {\"threshold\": 1.0}}'") from None
    if args.out.exists():
        if not args.force:
            raise SystemExit(f"error: {args.out} exists; pass --force to replace it")
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for part in ("vae", "unet", "scheduler", "clap"):
        shutil.copytree(args.unet_run / part, args.out / part)
    shutil.copytree(args.vocoder_run / "training" / "vocoder-trained", args.out / "vocoder")
    if vocoder_options:
        voc = args.out / "vocoder" / "config.json"
        try:
            config = VocosConfig.model_validate(json.loads(voc.read_text()) | vocoder_options)
        except ValidationError as e:
            raise SystemExit(f"error: --vocoder-option: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        voc.write_text(config.model_dump_json(indent=2) + "\n")
    pipe = json.loads((args.unet_run / "pipeline.json").read_text())
    kind = json.loads((args.vocoder_run / "training" / "config.json").read_text())["vocoder"]["kind"]
    unet, vocoder = last_step(args.unet_run, "unet"), last_step(args.vocoder_run, "vocoder")
    about = (f" Its UNet is at step {unet[0]} of {unet[1]} and its Vocos at step {vocoder[0]} of {vocoder[1]},"
             " both still training.")
    sampling = {**pipe["sampling"], **dict(kv.split("=", 1) for kv in args.sampling)}
    config = PipelineConfig.model_validate(
        {**pipe, "vocoder": kind, "description": pipe["description"] + about, "sampling": sampling})
    (args.out / "pipeline.json").write_text(config.model_dump_json(indent=2) + "\n")
    print(f"{args.out}: UNet of {args.unet_run} (step {unet[0]}), {kind} of {args.vocoder_run} (step {vocoder[0]})")


def last_step(run: Path, stage: str) -> tuple[int, int]:
    """The stage's saved step (its resumable state's) and its planned steps."""
    step = json.loads((run / "training" / stage / "step.json").read_text())["step"]
    return step, json.loads((run / "training" / "config.json").read_text())[stage]["steps"]


if __name__ == "__main__":
    main()
