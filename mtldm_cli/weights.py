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

