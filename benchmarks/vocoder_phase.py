"""Which half of a Vocos loses the notes, its magnitude or its phase? Real held-out test stems
rebuilt from magnitudes and phases of different origins, each measured as benchmarks/codec.py does.

    python benchmarks/vocoder_phase.py --vocoder runs/demo-v2/vocoder/training/vocoder-trained
    python benchmarks/vocoder_phase.py --vocoder DIR --tracks 3          # a smoke run
    python benchmarks/vocoder_phase.py --vocoder DIR --vocos-only        # the Vocos alone: compare saves

The STFT is the vocoder head's own (its n_fft, hop, window), so every row is that head's inverse STFT of:

- true magnitude + Griffin-Lim phase (64 fast iterations from a fixed random start);
- the magnitude least-squares through the mel filters ("mel") + the true phase: what the log-mel keeps;
- the Vocos' magnitude + the true phase, and the true magnitude + the Vocos' phase;
- mel magnitude + Griffin-Lim (the Griffin-Lim vocoder), and the Vocos as it plays.

Prints a JSON report (machine, date, settings, figures), each row measured by benchmarks/codec.py's
``Reference``: voiced fraction and median pitch error in cents for bass, guitar and piano
(torchcrepe), key kept and key agreement, onset sharpness, MR-STFT, spectral convergence, log-mel L1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import ROOT, Reference, fit, test_windows
from benchmarks.common import machine_report
from mtldm_cli.audio import MelFrontEnd
from mtldm_cli.config import AudioConfig
from mtldm_cli.vocoders import VocosVocoder


def griffin_lim(voc: VocosVocoder, magnitude: torch.Tensor, iters: int = 64) -> torch.Tensor:
    """Fast Griffin-Lim (momentum 0.99) on the head's frames, from a fixed random phase."""
    start = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(0)) * 2 * torch.pi
    spec, previous = magnitude * torch.exp(1j * start), torch.zeros_like(magnitude, dtype=torch.complex64)
    for _ in range(iters):
        rebuilt = voc.target_spectrum(voc.head.istft(spec))
        accelerated = rebuilt - 0.99 / 1.99 * previous
        previous = rebuilt
        spec = magnitude * accelerated / accelerated.abs().clamp(min=1e-8)
    return voc.head.istft(spec)


def main() -> None:
    import torchaudio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocoder", type=Path, required=True, help="a Vocos folder (config.json, model.safetensors)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--n-mels", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocos-only", action="store_true", help="only the Vocos as it plays: a quick comparison of saves")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.vocoder / "config.json").is_file():
        raise SystemExit(f"error: {args.vocoder}: no Vocos here (config.json missing); pass a folder such as "
                         "runs/demo-v2/vocoder-prior-step21750/training/vocoder-trained")
    voc = VocosVocoder.from_pretrained(args.vocoder).eval()
    c = voc.config
    audio = AudioConfig(n_mels=args.n_mels, hop_length=c.hop_length, n_fft=c.n_fft)
    front = MelFrontEnd(audio)
    inverse_mel = torchaudio.transforms.InverseMelScale(c.n_fft // 2 + 1, n_mels=audio.n_mels, sample_rate=audio.sample_rate,
                                                        f_min=audio.f_min, f_max=audio.f_max, norm="slaney", mel_scale="slaney")
    stems, windows = test_windows(args.data, args.tracks)

    rows: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for clip in windows:
            n = clip.shape[-1]
            mel = front(clip, n // c.hop_length)
            true = voc.target_spectrum(clip)
            frames = min(true.shape[-1], mel.shape[1])
            true = true[..., :frames]
            vocos = voc.spectrum(mel)[..., :frames]
            if args.vocos_only:
                rows.setdefault("Vocos (its magnitude and phase)", []).append(fit(voc.head.istft(vocos), n))
                continue
            mel_mag = inverse_mel(mel.exp().transpose(-1, -2))[..., :frames].clamp(min=0)
            made = {
                "true magnitude + Griffin-Lim phase": griffin_lim(voc, true.abs()),
                "mel magnitude + true phase": voc.head.istft(torch.polar(mel_mag, true.angle())),
                "Vocos magnitude + true phase": voc.head.istft(torch.polar(vocos.abs(), true.angle())),
                "true magnitude + Vocos phase": voc.head.istft(torch.polar(true.abs(), vocos.angle())),
                "mel magnitude + Griffin-Lim phase (the Griffin-Lim vocoder)": griffin_lim(voc, mel_mag),
                "Vocos (its magnitude and phase)": voc.head.istft(vocos),
            }
            for name, wav in made.items():
                rows.setdefault(name, []).append(fit(wav, n))

    reference = Reference(stems, windows, "tiny")
    report = {**machine_report(), "vocoder": str(args.vocoder), "tracks": len(windows), "crepe": "tiny",
              "rows": {"real stems": reference.measure(list(windows))} | {name: reference.measure(t) for name, t in rows.items()}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
