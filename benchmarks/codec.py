"""Does the codec keep the notes? Real held-out test stems through each codec's vocoder alone and
through front end + VAE + vocoder, each beside Griffin-Lim on the same front end.

    python benchmarks/codec.py                                   # demo (v1) beside models/demo-v2
    python benchmarks/codec.py --codec v1=demo-v1 --codec v2=demo --tracks 16
    python benchmarks/codec.py --quick                           # 3 tracks

A codec is a model name or folder (pipeline.json), or a training run folder (training/config.json
with vae/ and vocoder/ or training/vocoder-trained/). Every figure is over one 10.24 s window per
test track (`mtldm data synth --split test`, made when --data is missing):

- pitch (torchcrepe, trained by its authors and shipped in its package): the voiced fraction
  against the real stem's, and the median pitch error in cents over frames voiced in both, for
  bass, guitar and piano (goals: >= 80 % of the real voiced fraction, < 50 cents);
- key agreement: the share of pairs of pitched stems of one song with the same estimated key
  (Krumhansl-Kessler on chroma), against the real stems' (goal: >= 80 % of the real value);
- key kept: the share of pitched stems whose estimated key is the real stem's;
- onset sharpness (top 2 % of the onset envelope over its mean) next to the real stems';
- MR-STFT distance, its spectral-convergence half alone (``sc``: the loud bins), and log-mel L1 on
  one fixed 128-mel front end for every codec;
- the separation oracle: the true stems through the codec, SI-SDRi with and without the Wiener
  filter against the mix;
- speed: decoding 10.24 s of 4 stems (VAE decode + vocoder), and each vocoder alone on the same
  log-mels, best of 3, side by side in one run (ratios; the absolute times depend on the load).

Prints a JSON report (machine, date, settings, figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from mtldm_cli.audio import MelFrontEnd, griffin_lim_vocoder, is_silent
from mtldm_cli.config import PIPELINE_FILE, AudioConfig, PipelineConfig
from mtldm_cli.data.datasets import StemDataset
from mtldm_cli.errors import MtldmError
from mtldm_cli.metrics import estimate_key, evaluate_separation, key_agreement, mrstft_distance, onset_sharpness, spectral_convergence
from mtldm_cli.separation import wiener_filter
from mtldm_cli.vocoders import VocosVocoder

ROOT = Path(__file__).resolve().parents[1]
PITCHED = ("bass", "guitar", "piano")
RATE = 16000
SECONDS = 10.24
EVAL_MEL = AudioConfig(n_mels=128, hop_length=256)


class Codec:
    """A front end, a VAE and a vocoder, from a model folder or a training run."""

    def __init__(self, name: str, source: str):
        from diffusers import AutoencoderKL

        from mtldm_cli.components import load_vocoder

        self.name = name
        folder = Path(source)
        if not folder.is_dir():
            from mtldm_cli.sources import resolve_model

            folder = resolve_model(source).path
        if (folder / PIPELINE_FILE).is_file():
            config = PipelineConfig.model_validate_json((folder / PIPELINE_FILE).read_text())
            vocoder_folder = folder / "vocoder"
        else:  # a training run: its config, and the vocoder it trained
            from mtldm_cli.train import TrainConfig

            cfg = TrainConfig.model_validate_json((folder / "training" / "config.json").read_text())
            vocoder_folder = folder / "vocoder" if (folder / "vocoder").is_dir() else folder / "training" / "vocoder-trained"
            kind = cfg.vocoder.kind if vocoder_folder.is_dir() else "griffin-lim"
            config = PipelineConfig(name=name, audio=cfg.audio, vocoder=kind)
        self.audio = config.audio
        self.front = MelFrontEnd(self.audio)
        self.vae = AutoencoderKL.from_pretrained(folder / "vae").eval() if (folder / "vae").is_dir() else None
        self.vocoder = load_vocoder(config, vocoder_folder).eval()
        self.kind = config.vocoder
        self.griffin_lim = griffin_lim_vocoder(self.audio)

    @torch.no_grad()
    def paths(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each way back to audio: vocoder alone, VAE + vocoder, and Griffin-Lim beside each."""
        n = clips.shape[-1]
        frames = n // self.audio.hop_length
        mel = self.front(clips, frames)
        out = {}
        vocoders = {"griffin-lim": self.griffin_lim} | ({} if self.kind == "griffin-lim" else {self.kind: self.vocoder})
        coded = None
        if self.vae is not None:
            coded = torch.cat([self.vae.decode(self.vae.encode(m[None, None]).latent_dist.mode()).sample[:, 0] for m in mel])
        for kind, voc in vocoders.items():
            def run(m, voc=voc):  # a Vocos is told each clip's stem (its onset_reset_stems), as LatentCodec does
                return voc(m, stems=list(self.audio.stems)) if isinstance(voc, VocosVocoder) else voc(m)

            torch.manual_seed(0)
            out[f"{self.name} {kind} (vocoder alone)"] = fit(run(mel), n)
            if coded is not None:
                torch.manual_seed(0)
                out[f"{self.name} VAE + {kind}"] = fit(run(coded), n)
        return out

    @torch.no_grad()
    def vocoder_seconds(self, stems: int = 4) -> dict[str, float]:
        """Wall time of each vocoder on one segment of ``stems`` log-mels, best of 3."""
        frames = self.audio.segment_frames
        mel = self.front(torch.randn(stems, frames * self.audio.hop_length) * 0.1, frames)
        vocoders = {"griffin-lim": self.griffin_lim} | ({} if self.kind == "griffin-lim" else {self.kind: self.vocoder})
        times = {}
        for kind, voc in vocoders.items():
            best = np.inf
            for _ in range(3):
                t = time.perf_counter()
                voc(mel)
                best = min(best, time.perf_counter() - t)
            times[kind] = round(best, 3)
        return times

    @torch.no_grad()
    def decode_seconds(self, stems: int = 4) -> float:
        """Wall time of decoding one segment of ``stems`` stems from latents (VAE decode + vocoder)."""
        frames = self.audio.segment_frames
        mel = self.front(torch.zeros(stems, frames * self.audio.hop_length) + 1e-3, frames)
        z = self.vae.encode(mel[:, None]).latent_dist.mode()
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            self.vocoder(self.vae.decode(z).sample[:, 0])
            best = min(best, time.perf_counter() - t)
        return best


def fit(wav: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(wav, (0, max(0, n - wav.shape[-1])))[..., :n].float()


def pitch(wav: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, voiced) every 10 ms, torchcrepe with its periodicity as the voicing (> 0.5, median-filtered)."""
    import torchcrepe

    x = torch.as_tensor(wav, dtype=torch.float32)[None]
    f0, periodicity = torchcrepe.predict(x, RATE, RATE // 100, 32.7, 1975.5, model, batch_size=1024,
                                         return_periodicity=True, device="cpu")
    periodicity = torchcrepe.filter.median(periodicity, 3)
    return f0[0].numpy(), periodicity[0].numpy() > 0.5


def test_windows(folder: Path, tracks: int) -> tuple[list[str], torch.Tensor]:
    """One 10.24 s window per test track, ``[K, 4, N]`` in bass, drums, guitar, piano order."""
    ds = StemDataset(folder, sample_rate=RATE, segment_seconds=SECONDS, random_shift=False)
    first: dict[int, int] = {}
    for i in range(len(ds)):
        first.setdefault(ds.locate(i)[0], i)
    picks = list(first.values())[:tracks]
    return list(ds.stems), torch.stack([ds[(i, 0)]["stems"] for i in picks])


class Reference:
    """The real test windows, and what each path's audio is measured against: their pitch (computed
    once), their keys, one fixed 128-mel front end."""

    def __init__(self, stems: list[str], windows: torch.Tensor, crepe: str):
        self.stems, self.windows, self.crepe = stems, windows, crepe
        self.front = MelFrontEnd(EVAL_MEL)
        self.frames = windows.shape[-1] // EVAL_MEL.hop_length
        self.pitch = {(k, stem): pitch(track[i].numpy(), crepe) for k, track in enumerate(windows)
                      for i, stem in enumerate(stems) if stem in PITCHED and not is_silent(track[i])}
        self.key = {(k, stem): estimate_key(windows[k][self.stems.index(stem)].numpy(), RATE) for k, stem in self.pitch}

    def measure(self, tracks: list[torch.Tensor]) -> dict:
        """Per stem: voiced fraction, pitch error (cents, median over tracks), key kept (is the estimated
        key the real stem's?), onset sharpness, MR-STFT, spectral convergence, log-mel L1; and the key
        agreement between one song's pitched stems. ``tracks``: ``[4, N]`` per test window."""
        metrics = ("voiced", "cents", "key_kept", "sharp", "mrstft", "sc", "mel_l1")
        per: dict = {s: {m: [] for m in metrics} for s in self.stems}
        keys = []
        for k, (est, ref) in enumerate(zip(tracks, self.windows)):
            pitched = []
            for i, stem in enumerate(self.stems):
                if is_silent(ref[i]):
                    continue
                p = per[stem]
                p["sharp"].append(onset_sharpness(est[i].numpy(), RATE))
                p["mrstft"].append(float(mrstft_distance(est[i][None], ref[i][None])))
                p["sc"].append(spectral_convergence(est[i][None], ref[i][None]))
                p["mel_l1"].append(float((self.front(est[i], self.frames) - self.front(ref[i], self.frames)).abs().mean()))
                if stem in PITCHED:
                    wav = est[i].numpy()
                    pitched.append(wav)
                    p["key_kept"].append(float(estimate_key(wav, RATE) == self.key[k, stem]))
                    f_ref, v_ref = self.pitch[k, stem]
                    f, v = (f_ref, v_ref) if torch.equal(est[i], ref[i]) else pitch(wav, self.crepe)
                    m = min(len(v), len(v_ref))
                    both = v[:m] & v_ref[:m]
                    p["voiced"].append(float(v[:m].mean()))
                    if both.any():
                        p["cents"].append(float(np.median(np.abs(1200 * np.log2(f[:m][both] / f_ref[:m][both])))))
            if len(pitched) >= 2:
                keys.append(key_agreement(pitched, RATE))
        summary: dict = {s: {m: round(float(np.mean(v)), 4) for m, v in d.items() if v} for s, d in per.items()}
        for s in PITCHED:
            if per[s]["cents"]:
                summary[s]["cents"] = round(float(np.median(per[s]["cents"])), 1)
        summary["key_agreement"] = round(float(np.mean(keys)), 4) if keys else None
        return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", action="append", help="NAME=MODEL_OR_FOLDER (repeatable)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--crepe", choices=("tiny", "full"), default="tiny", help="torchcrepe model (full: slower, a little more exact)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 tracks: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.tracks = 3
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        from mtldm_cli.data.render import synthesize

        synthesize(args.data, tracks=max(args.tracks, 16), seconds=30.0, split="test", jobs=2)
    specs = args.codec or ["v1=demo-v1", "v2=demo"]
    if bad := [spec for spec in specs if "=" not in spec]:
        raise SystemExit(f"error: --codec {bad[0]}: no name; pass NAME=MODEL_OR_FOLDER")
    try:
        codecs = [Codec(*spec.split("=", 1)) for spec in specs]
    except MtldmError as e:
        raise SystemExit(f"error: --codec: {e}") from None
    stems, windows = test_windows(args.data, args.tracks)

    outputs: dict[str, list[torch.Tensor]] = {}  # path -> per track [4, N]
    for k in range(len(windows)):
        for codec in codecs:
            for path, wav in codec.paths(windows[k]).items():
                outputs.setdefault(path, []).append(wav)

    reference = Reference(stems, windows, args.crepe)
    report: dict = {**machine_report(), "tracks": len(windows), "crepe": args.crepe, "codecs": {c.name: c.kind for c in codecs},
                    "paths": {"real stems": reference.measure(list(windows))}}
    for path, tracks in outputs.items():
        report["paths"][path] = reference.measure(tracks)

    # separation oracle: the true stems through each codec's full path, then with the Wiener filter
    oracle = {}
    for path, tracks in outputs.items():
        if "VAE" not in path:
            continue
        est, ref = torch.stack(tracks), windows
        mix = ref.sum(1)
        filtered = torch.stack([wiener_filter(e, m) for e, m in zip(est, mix)])
        for name, e in ((path, est), (f"{path} + Wiener", filtered)):
            active = []
            for k in range(len(ref)):
                scores = evaluate_separation(dict(zip(stems, e[k].numpy())), dict(zip(stems, ref[k].numpy())), RATE,
                                             mix[k].numpy())
                active += [v["si_sdri_active"] for v in scores.values() if v["windows_active"]]
            oracle[name] = round(float(np.nanmean(active)), 2)  # over the windows where each stem sounds
    report["separation_oracle_si_sdri"] = oracle
    report["decode_seconds_10s_4_stems"] = {c.name: round(c.decode_seconds(), 3) for c in codecs if c.vae is not None}
    report["vocoder_seconds_10s_4_stems"] = {c.name: c.vocoder_seconds() for c in codecs}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
