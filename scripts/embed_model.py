"""Copy a trained model folder into the package and pin it in checkpoints.toml.

    python scripts/embed_model.py models/demo demo
    python scripts/embed_model.py /tmp/demo-v2 demo --half   # weights stored in float16, computed in float32

Copies what `--model` loads (pipeline.json and the component folders, not training/) into
mtldm_cli/models/NAME and writes the registry entry, with the sha256 of every file, over the
[models.NAME] entry of checkpoints.toml (or at its end when there is none yet).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtldm_cli.checkpoints import sha256_file, store_half  # noqa: E402

COMPONENTS = ("vae", "unet", "scheduler", "vocoder", "clap")


def main(src: str, name: str, half: bool = False) -> None:
    src_dir, dst = Path(src), ROOT / "mtldm_cli" / "models" / name
    pipe = json.loads((src_dir / "pipeline.json").read_text())
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy2(src_dir / "pipeline.json", dst / "pipeline.json")
    for part in COMPONENTS:
        if (src_dir / part).is_dir():
            shutil.copytree(src_dir / part, dst / part)
    if half:
        print(f"# float16: {store_half(dst) / 1e6:.1f} MB saved", file=sys.stderr)
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    digests = ", ".join(f'"{p.relative_to(dst).as_posix()}" = "{sha256_file(p)}"' for p in files)
    audio = pipe["audio"]
    seconds = audio["segment_frames"] * audio["hop_length"] / audio["sample_rate"]
    print(f"# {size / 1e6:.1f} MB in {len(files)} files", file=sys.stderr)
    entry = (f"[models.{name}]\ndescription = {json.dumps(pipe['description'])}\nformat = \"mtldm\"\n"
          f"source = {{ package = \"{name}\", sha256 = {{ {digests} }} }}\n"
          f"audio = {{ sample_rate = {audio['sample_rate']}, segment_seconds = {seconds}, "
          f"stems = {json.dumps(audio['stems'])} }}\n"
          f"conditioning = \"{pipe.get('conditioning', 'clap' if (dst / 'clap').is_dir() else 'none')}\"\n")
    registry = ROOT / "checkpoints.toml"
    text = registry.read_text()
    head = f"[models.{name}]\n"
    if head not in text:
        registry.write_text(text.rstrip("\n") + "\n\n" + entry)
        print(f"# added [models.{name}] to {registry}: move it where it belongs", file=sys.stderr)
        return
    start = text.index(head)
    end = text.find("\n\n", start)
    registry.write_text(text[:start] + entry + (text[end + 1:] if end >= 0 else ""))
    print(f"# wrote [models.{name}] in {registry}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["--half"]):
        raise SystemExit("usage: python scripts/embed_model.py SRC NAME [--half]")
    main(sys.argv[1], sys.argv[2], half=sys.argv[3:] == ["--half"])
