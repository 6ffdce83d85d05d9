"""Why the Vocos' drum attacks are soft (issue 14's one goal short), and two cheap remedies measured.

    python benchmarks/vocoder_attacks.py --vocoder runs/demo-v2/vocoder-prior-step21750/training/vocoder-trained
    python benchmarks/vocoder_attacks.py --vocoder DIR --finetune 800     # and the fine-tune A/B (~10 min, one thread)
    python benchmarks/vocoder_attacks.py --vocoder DIR --reset --data data/mini-slakh/validation   # the onset-reset grid
    python benchmarks/vocoder_attacks.py --vocoder DIR --reset --tracks 32 --thresholds 0.2 0.5 1.0 --delays 0 64 128

Every row is onset sharpness (top 2 % of the onset envelope over its mean, as benchmarks/codec.py)
and MR-STFT per stem, over one 10.24 s window of each held-out test track (silent ones included:
benchmarks/codec.py leaves a silent stem out, so its guitar figures differ; Griffin-Lim's faint output
against a silent window's digital silence makes its MR-STFT meaningless here: read its sharpness):

- **phase**: the Vocos as trained, beside Griffin-Lim (64 fast iterations on the least-squares
  magnitude of the same log-mel, the path it replaces); its integrated phase restarted at the log-mel's onsets (the
  mean rectified log-mel flux of a frame over a threshold): if the bins' accumulated phase
  deviations misalign them at an attack, a restart lines them up; and without its deviations;
- **window**: the true magnitude with a random phase, and with the true phase plus noise (1 rad),
  through an inverse STFT of n_fft 512, 768 and 1024 at the head's hop: how far a wrong phase can
  smear an attack, by the length of the window it is spread over;
- **reset** (``--reset``): the integrated phase restarted at the log-mel's onsets from a known
  phase: the true one at those frames only (an oracle: what a right phase at the attacks alone buys),
  and an impulse's (the Vocos' ``onset_reset``) over a grid of flux thresholds and impulse delays
  (``--thresholds``, ``--delays``), every stem reset: the figures choose each stem's setting;
- **finetune** (``--finetune N``): N steps from the given Vocos, without discriminators, on the
  training split with the run's reconstruction loss (configs/demo-v2.yaml's weights; learning rate
  1e-4), once as it is and once with short STFT resolutions (128/32, 256/64) added to its MR-STFT
  term, the same batches for both: does a loss that sees the attack in time sharpen it?

Prints a JSON report (machine, date, settings, figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import RATE, ROOT, fit, test_windows
from benchmarks.common import machine_report
from mtldm_cli.audio import MelFrontEnd, griffin_lim_vocoder
from mtldm_cli.config import AudioConfig
from mtldm_cli.errors import MtldmError
from mtldm_cli.metrics import MRSTFT_RESOLUTIONS, mrstft_distance, onset_sharpness
from mtldm_cli.vocoders import VocosVocoder

SHORT = ((128, 32), (256, 64))


def measure(stems: list[str], windows: torch.Tensor, make) -> dict:
    """``make(clips [K, N]) -> audio [K, N']`` per stem: mean onset sharpness and MR-STFT."""
    out = {}
    for s, stem in enumerate(stems):
        x = windows[:, s]
        y = fit(make(x), x.shape[-1])
        out[stem] = {"sharp": round(float(np.mean([onset_sharpness(a.numpy(), RATE) for a in y])), 3),
                     "mrstft": round(float(mrstft_distance(y, x)), 3)}
    return out


def restarted_spectrum(voc: VocosVocoder, logmel: torch.Tensor, threshold: float | None, deviations: bool = True):
    """The head's spectrum with its phase integration started again at every onset frame."""
    log_mag, (advance, offset) = voc.head_terms(logmel)
    if not deviations:
        advance = voc.advance[:, None].expand_as(advance)
    summed = torch.cumsum(advance, dim=-1)
    if threshold is not None:
        onset = voc.onsets(logmel, threshold)
        frame = torch.arange(logmel.shape[1]).expand_as(onset)
        last = torch.where(onset, frame, torch.zeros_like(frame)).cummax(dim=1).values
        before = torch.gather(summed, 2, (last - 1).clamp(min=0)[:, None].expand_as(summed))
        summed = summed - torch.where((last > 0)[:, None], before, torch.zeros_like(before))
    return torch.clip(torch.exp(log_mag), max=1e2) * torch.exp(1j * (summed + offset))


def true_phase_at_onsets(voc: VocosVocoder, x: torch.Tensor, logmel: torch.Tensor, threshold: float) -> torch.Tensor:
    """The Vocos' magnitude and summed phase, restarted at each onset frame from the true phase there."""
    log_mag, (advance, offset) = voc.head_terms(logmel)
    true = voc.target_spectrum(x)[..., :logmel.shape[1]].angle()
    phase = voc.reset_at_onsets(torch.cumsum(advance, dim=-1) + offset, logmel, threshold=threshold, start=true)
    return voc.head.istft(torch.clip(torch.exp(log_mag), max=1e2) * torch.exp(1j * phase))


def finetune(source: Path, steps: int, resolutions, data: Path, seed: int = 0) -> VocosVocoder:
    """``steps`` steps of the run's reconstruction loss from ``source``, no discriminators."""
    from mtldm_cli.data.datasets import StemDataset
    from mtldm_cli.train.config import load_config
    from mtldm_cli.train.stages import vocoder_reconstruction_loss

    v = load_config(ROOT / "configs" / "demo-v2.yaml").vocoder
    voc = VocosVocoder.from_pretrained(source).train()
    front = MelFrontEnd(AudioConfig(n_mels=voc.config.n_mels, hop_length=voc.config.hop_length))
    ds = StemDataset(data, sample_rate=RATE, segment_seconds=10.24, random_shift=False)
    opt = torch.optim.AdamW(voc.parameters(), lr=1e-4, betas=v.betas)
    g = torch.Generator().manual_seed(seed)
    n, hop = v.window_frames, voc.config.hop_length
    for _ in range(steps):
        stems = torch.cat([ds[(i, 0)]["stems"] for i in torch.randint(0, len(ds), (v.batch_size,), generator=g).tolist()])
        start = torch.randint(0, stems.shape[-1] - n * hop + 1, (len(stems),), generator=g).tolist()
        clips = torch.stack([c[o:o + n * hop] for c, o in zip(stems, start)])
        clips = clips[clips.abs().mean(-1) >= 1e-3]
        if not len(clips):
            continue
        loss, _, _ = vocoder_reconstruction_loss(v, front, voc, voc, clips, resolutions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return voc.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocoder", type=Path, required=True, help="a Vocos folder with the integrated-phase head")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--train-data", type=Path, default=ROOT / "data" / "mini-slakh" / "train")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--finetune", type=int, default=0, metavar="STEPS", help="also the fine-tune A/B, this many steps each")
    ap.add_argument("--reset", action="store_true", help="also the onset-reset rows (true phase, impulse delays)")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 1.0, 1.5], help="the reset grid's flux thresholds")
    ap.add_argument("--delays", nargs="+", type=int, default=[64, 128, 192, 256], help="the reset grid's impulse delays (samples)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.vocoder / "config.json").is_file():
        raise SystemExit(f"error: {args.vocoder}: no Vocos here (config.json missing); pass a folder such as "
                         "runs/demo-v2/vocoder-prior-step21750/training/vocoder-trained")
    voc = VocosVocoder.from_pretrained(args.vocoder).eval()
    c = voc.config
    if c.phase != "integrated":
        raise SystemExit(f"error: {args.vocoder}: its head's phase is {c.phase!r}, not 'integrated'")
    audio = AudioConfig(n_mels=c.n_mels, hop_length=c.hop_length)
    front, griffin_lim = MelFrontEnd(audio), griffin_lim_vocoder(audio)
    try:
        stems, windows = test_windows(args.data, args.tracks)
    except MtldmError as e:
        raise SystemExit(f"error: --data {e}") from None

    def mel(x):
        return front(x, x.shape[-1] // c.hop_length)

    report: dict = {**machine_report(), "vocoder": str(args.vocoder), "tracks": len(windows)}
    with torch.no_grad():
        report["real"] = measure(stems, windows, lambda x: x)
        phase = {"as trained": measure(stems, windows, lambda x: voc(mel(x))),
                 "griffin-lim": measure(stems, windows, lambda x: griffin_lim(mel(x)))}
        for threshold in (0.5, 1.0, 2.0):
            phase[f"restarted at onsets (flux > {threshold})"] = measure(
                stems, windows, lambda x, t=threshold: voc.head.istft(restarted_spectrum(voc, mel(x), t)))
        phase["without its deviations"] = measure(
            stems, windows, lambda x: voc.head.istft(restarted_spectrum(voc, mel(x), None, deviations=False)))
        report["phase"] = phase
        window = {}
        g = torch.Generator().manual_seed(0)
        for n_fft in (512, 768, 1024):
            hann = torch.hann_window(n_fft)

            def rebuilt(x, noise, n_fft=n_fft, hann=hann):
                true = torch.stft(x, n_fft, c.hop_length, window=hann, return_complex=True)
                angle = (torch.rand(true.shape, generator=g) * 2 * torch.pi if noise is None
                         else true.angle() + noise * torch.randn(true.shape, generator=g))
                return torch.istft(torch.polar(true.abs(), angle), n_fft, c.hop_length, window=hann, length=x.shape[-1])

            window[f"n_fft {n_fft}, random phase"] = measure(stems, windows, lambda x: rebuilt(x, None))
            window[f"n_fft {n_fft}, true phase + 1 rad noise"] = measure(stems, windows, lambda x: rebuilt(x, 1.0))
        report["window"] = window
    if args.reset:
        reset = {}
        with torch.no_grad():
            for threshold in args.thresholds:
                reset[f"true phase at onsets (flux > {threshold})"] = measure(
                    stems, windows, lambda x, t=threshold: true_phase_at_onsets(voc, x, mel(x), t))
                for delay in args.delays:
                    voc.config = c.model_copy(update={"onset_reset": threshold, "onset_delay": delay, "onset_reset_stems": None})
                    reset[f"impulse {delay} samples late at onsets (flux > {threshold})"] = measure(
                        stems, windows, lambda x: voc(mel(x)))
            voc.config = c
        report["reset"] = reset
    if args.finetune:
        report["finetune"] = {"steps": args.finetune}
        for name, resolutions in (("the run's loss", MRSTFT_RESOLUTIONS), ("with short resolutions", MRSTFT_RESOLUTIONS + SHORT)):
            tuned = finetune(args.vocoder, args.finetune, resolutions, args.train_data)
            with torch.no_grad():
                report["finetune"][name] = measure(stems, windows, lambda x, m=tuned: m(mel(x)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
