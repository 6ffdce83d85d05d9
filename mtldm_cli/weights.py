"""Our on-disk layout for the modules whose config is a pydantic model (the multi-track UNet, the
Vocos vocoder): ``config.json`` + ``model.safetensors``, loaded strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="SafetensorsLayout")


class SafetensorsLayout:
    """Mixin for an ``nn.Module`` built from ``config_class(...)`` and holding it as ``self.config``."""

    config_class: ClassVar[type[BaseModel]]
    config: Any

    @classmethod
    def read_config(cls, folder: str | Path) -> Any:
        return cls.config_class.model_validate_json((Path(folder) / CONFIG_NAME).read_text())

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls: type[M], folder: str | Path) -> M:
        from safetensors.torch import load_file

        model = cls(cls.read_config(folder))  # type: ignore[call-arg]
        model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_NAME)), strict=True)  # type: ignore[attr-defined]
        return model.eval()  # type: ignore[attr-defined]


def store_half(folder: str | Path) -> int:
    """Rewrite every ``*.safetensors`` under ``folder`` with its floating-point tensors in float16
    (metadata kept), halving what a shipped model weighs; loading computes in float32 again.
    Returns the bytes saved. A weight float16 cannot hold (beyond +-65504) is a ``ValueError``,
    before any file is changed."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = sorted(Path(folder).rglob("*.safetensors"))
    halves: dict[Path, tuple[dict, dict]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
        for name, t in tensors.items():
            if t.is_floating_point() and t.numel() and float(t.abs().max()) > torch.finfo(torch.float16).max:
                raise ValueError(f"{path}: {name} holds values beyond float16's range")
        halves[path] = ({k: t.half() if t.is_floating_point() else t for k, t in tensors.items()}, metadata)
    saved = 0
    for path, (tensors, metadata) in halves.items():
        before = path.stat().st_size
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp), metadata=metadata)
        tmp.replace(path)
        saved += before - path.stat().st_size
    return saved
