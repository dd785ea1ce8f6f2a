"""The ``hierqdrant`` command line: a thin Typer layer over the library."""

from __future__ import annotations

import typer

from hierqdrant import __version__

from . import hierarchy
from .attach import attach_command, detach_command
from .demo import demo_command
from .embed import embed_command
from .eval import eval_command
from .info import info_command
from .ingest import ingest_command
from .query import query_command
from .train import train_command
from .tune import tune_command

app = typer.Typer(
    name="hierqdrant",
    help="Hierarchy-aware image retrieval for Qdrant: rank by cosine distance + α·height(LCA)/H.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ingest")(ingest_command)
app.command("query")(query_command)
app.command("info")(info_command)
app.command("embed")(embed_command)
app.command("train")(train_command)
app.command("demo")(demo_command)
app.command("eval")(eval_command)
app.command("tune")(tune_command)
app.command("attach")(attach_command)
app.command("detach")(detach_command)
app.add_typer(hierarchy.app, name="hierarchy")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hierqdrant {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Hierarchy-aware image retrieval for Qdrant."""


def main() -> None:
    app(prog_name="hierqdrant")
