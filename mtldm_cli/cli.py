"""The ``mtldm`` command line. Subcommands live in ``mtldm_cli/commands``; torch loads lazily."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .commands.arrange import arrange
from .commands.condition import condition
from .commands.convert import convert
from .commands.data import app as data_app
from .commands.evaluate import evaluate
from .commands.generate import generate
from .commands.models import models
from .commands.plot import plot
from .commands.separate import separate
from .commands.train import train
from .version import __version__

app = typer.Typer(
    name="mtldm",
    help="Multi-Track MusicLDM: generate, arrange and separate bass, drums, guitar and piano stems.\n\n"
    "Exit codes: 0 ok, 1 internal error, 2 bad input or usage, 3 model not found/loadable, "
    "4 output not writable or already there, 130 interrupted.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for command in (generate, condition, arrange, separate, evaluate, plot, train, convert, models):
    app.command()(command)
app.add_typer(data_app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtldm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    pass


def main() -> None:
    """The console script. With --json, a usage error (an unknown option, a bad value) is one JSON
    document on stdout too, as every other failure is."""
    import sys

    from .commands.common import prefix_stderr_by_rank

    prefix_stderr_by_rank()
    if "--json" not in sys.argv[1:]:
        app()
        return
    from .commands.common import emit_json

    try:
        code = typer.main.get_command(app).main(prog_name="mtldm", standalone_mode=False)
    except typer.Abort:
        emit_json({"ok": False, "error": "interrupted", "exit_code": 130})
        code = 130
    except typer.TyperException as e:  # typer's click: a usage error, a bad value
        code = getattr(e, "exit_code", 2)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        emit_json({"ok": False, "error": message, "exit_code": code})
        if hasattr(e, "show"):
            e.show()
    sys.exit(code if isinstance(code, int) else 0)
