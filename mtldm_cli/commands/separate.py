"""``mtldm separate``: a mixture into stems with MSDM's posterior samplers in latent space."""

from __future__ import annotations

import time
from pathlib import Path
from enum import Enum
from typing import Annotated

import typer

from ..audio import read_audio
from ._common import (Device, DeviceOpt, FloatOpt, ForceOpt, JsonOpt, ModelOpt, OfflineOpt, OutOpt, QuietOpt,
                      RevisionOpt, SeedOpt, StepsOpt, finish, guarded, load_pipeline, precheck_outputs,
                      progress_callback)


class Method(str, Enum):
    dirac = "dirac"
    gaussian = "gaussian"
    consistency = "consistency"


@guarded
def separate(
    mixture: Annotated[Path, typer.Argument(help="The mixture to separate.", show_default=False)],
    method: Annotated[Method, typer.Option(help="dirac: pin one stem to the mixture constraint; gaussian: Gaussian likelihood of the mixture; consistency (ours): gaussian plus a mel-domain mixture-consistency gradient through the decoder.")] = Method.dirac,
    out: OutOpt = Path("out"),
    model: ModelOpt = "demo",
    steps: StepsOpt = None,
    churn: Annotated[float, typer.Option(min=0.0, help="MSDM's s_churn: noise re-injected per step.")] = 20.0,
    resamples: Annotated[int, typer.Option(min=1, help="Resampling passes per step.")] = 2,
    sigma_max: Annotated[float, typer.Option(min=0.0, help="Largest noise level (maps to the last timestep).")] = 1.0,
    sigma_min: Annotated[float, typer.Option(min=0.0, help="Smallest noise level.")] = 1e-4,
    gamma: Annotated[float, typer.Option(min=0.0, help="gaussian: likelihood width as a multiple of sigma.")] = 0.75,
    consistency: Annotated[float, typer.Option(min=0.0, help="consistency: strength of the mel-domain mixture-consistency gradient.")] = 1.0,
    wiener: Annotated[bool, typer.Option("--wiener/--no-wiener", help="Soft-mask the mixture's STFT with the estimates: outputs keep its phase and sum to it (--no-wiener: the decoded stems as they are).")] = True,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.auto,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    force: ForceOpt = False,
    float_wav: FloatOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Separate MIXTURE into one WAV per stem (mix.wav is the sum of the estimates).

    Latent-space separation is approximate: the latent of a sum is not the sum of latents. Measured methods and limits: docs/separation.md.
    """
    started = time.perf_counter()
    read_audio(mixture)
    pipe = load_pipeline(model, device, revision=revision, offline=offline, quiet=quiet or json_out)
    precheck_outputs(out, list(pipe.stems), force)
    with progress_callback(f"separating ({method.value})", quiet or json_out) as cb:
        result = pipe.separate(mixture, method=method.value, steps=steps, s_churn=churn, resamples=resamples,
                               sigma_max=sigma_max, sigma_min=sigma_min, gamma=gamma, consistency=consistency, wiener=wiener, seed=seed,
                               callback=cb)
    finish(result, out, command="separate", argv_info={}, force=force, float_wav=float_wav, json_out=json_out,
           quiet=quiet, started=started)
