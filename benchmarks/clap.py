"""Does our CLAP know what it hears? Retrieval and zero-shot tests on the held-out synthetic test split.

    python benchmarks/clap.py --model models/demo-v2          # a model folder (its clap/) or a CLAP folder
    python benchmarks/clap.py --model models/v2-clap --tracks 32

Every track gives two clips of the CLAP's length (from 0 s and from the middle); audio embeddings
are of the mix, as in training and in `mtldm condition`. Captions use the held-out phrasings only
(never seen in training), and the training phrasings beside them:

- text -> audio retrieval among the tracks' first clips: R@1 and R@10, against chance (1/K, 10/K);
- zero-shot style ("a {style} song", 7 styles) and tempo band ("a {slow|laid-back|upbeat|fast} song")
  on the first clips: accuracy against chance and against always answering the commonest class;
- one track's two clips against clips of different tracks: mean cosine similarity of each, and
  audio -> audio R@1 (the second clip found from the first) against chance.

Prints a JSON report (machine, date, settings, figures).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from mtldm_cli.conditioning import clap_audio_embedding, clap_text_embedding
from mtldm_cli.data.captions import PACES, caption, pace
from mtldm_cli.data.compose import STYLES
from mtldm_cli.data.datasets import read_segment, scan

ROOT = Path(__file__).resolve().parents[1]


def load_clap(source: Path):
    from transformers import ClapModel, ClapProcessor

    folder = source / "clap" if (source / "clap").is_dir() else source
    return ClapModel.from_pretrained(folder).eval(), ClapProcessor.from_pretrained(folder)


def recall_at(sim: torch.Tensor, k: int) -> float:
    """Share of rows whose own column (the diagonal) is among their k best."""
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return float((top == torch.arange(len(sim))[:, None]).any(1).float().mean())


def zero_shot(model, processor, audio: torch.Tensor, labels: list[str], classes: list[str], prompt: str) -> dict:
    text = clap_text_embedding(model, processor, [prompt.format(c) for c in classes])
    guess = (audio @ text.T).argmax(1).tolist()
    truth = [classes.index(label) for label in labels]
    commonest = Counter(labels).most_common(1)[0][1] / len(labels)
    return {"accuracy": round(float(np.mean([g == t for g, t in zip(guess, truth)])), 4),
            "chance": round(1 / len(classes), 4), "commonest_class": round(commonest, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo-v2")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        from mtldm_cli.data.render import synthesize

        synthesize(args.data, tracks=args.tracks, seconds=30.0, split="test", jobs=2)
    model, processor = load_clap(args.model)
    fe = processor.feature_extractor
    rate, seconds = int(fe.sampling_rate), fe.nb_max_samples / fe.sampling_rate
    tracks = [t for t in scan(args.data, min_seconds=2 * seconds).tracks][: args.tracks]
    metas = [json.loads((t.path / "meta.json").read_text()) for t in tracks]
    starts = [(0.0, t.seconds / 2) for t in tracks]

    def embed(which: int) -> torch.Tensor:
        mixes = [read_segment(t, ("bass", "drums", "guitar", "piano"), s[which], seconds, rate).sum(0)
                 for t, s in zip(tracks, starts)]
        return torch.cat([clap_audio_embedding(model, processor, m[None], rate, rate, seconds) for m in mixes])

    first, second = embed(0), embed(1)
    report: dict = {**machine_report(), "model": str(args.model), "tracks": len(tracks), "clip_seconds": seconds}
    for held_out in (True, False):
        rng = random.Random(0)
        texts = [caption(m, s[0], seconds, rng, held_out=held_out) for m, s in zip(metas, starts)]
        sim = clap_text_embedding(model, processor, texts) @ first.T
        report["text_to_audio" + ("" if held_out else " (training phrasings)")] = {
            "R@1": round(recall_at(sim, 1), 4), "R@10": round(recall_at(sim, 10), 4),
            "chance R@1": round(1 / len(tracks), 4), "chance R@10": round(min(1.0, 10 / len(tracks)), 4),
            "example": texts[0]}
    report["zero_shot_style"] = zero_shot(model, processor, first, [m["style"] for m in metas],
                                          [s.name for s in STYLES], "a {} song")
    report["zero_shot_tempo_band"] = zero_shot(model, processor, first, [pace(float(m["tempo"])) for m in metas],
                                               [w for w, _ in PACES], "a {} song")
    cross = first @ second.T
    off = ~torch.eye(len(tracks), dtype=torch.bool)
    report["same_track_clips"] = {
        "cosine_same_track": round(float(cross.diag().mean()), 4),
        "cosine_other_tracks": round(float(cross[off].mean()), 4),
        "share_closer_than_every_other_track": round(recall_at(cross, 1), 4),
        "chance": round(1 / len(tracks), 4)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
