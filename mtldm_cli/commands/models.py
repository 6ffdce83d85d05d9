"""``mtldm models``: the registry, and which entries are cached."""

from __future__ import annotations



from ..checkpoints import load_registry
from ..sources import is_cached
from .common import JsonOpt, emit_json, guarded


@guarded
def models(json_out: JsonOpt = False) -> None:
    """List the models in checkpoints.toml (and MTLDM_REGISTRY) and whether each is cached."""
    rows = [(e, is_cached(e)) for e in load_registry().values()]
    if json_out:
        emit_json({"models": [{"name": e.name, "cached": c, "source": e.describe(), "format": e.format,
                               "description": e.description, "conditioning": e.conditioning, **e.audio.model_dump()}
                              for e, c in rows]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mtldm models", title_style="bold")
    for col in ("name", "cached", "audio", "source", "description"):
        table.add_column(col, overflow="fold")
    for e, cached in rows:
        audio = f"{e.audio.sample_rate} Hz, {e.audio.segment_seconds:g} s, {'/'.join(e.audio.stems)}"
        table.add_row(e.name, "yes" if cached else "no", audio, e.describe(), e.description)
    Console().print(table)
