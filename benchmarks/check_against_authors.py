"""Compare our UNet with the authors' own ``openaimodel.UNetModel`` (not part of the test suite).

    git clone https://github.com/karchkha/mt-musicldm /tmp/mt-musicldm
    python benchmarks/check_against_authors.py --repo /tmp/mt-musicldm

Needs only their ``src/latent_diffusion`` folder on disk; nothing of theirs is vendored here.
Prints, for the published config with and without CLAP: whether the state-dict names and shapes
are identical and both parameter counts; then, on a small config with random weights loaded into
both, the largest absolute difference between the two forwards.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True, help="a checkout of karchkha/mt-musicldm")
    args = ap.parse_args()
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
