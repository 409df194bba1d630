"""`nps asyncapi [--check]`: write (or verify) the pipeline's AsyncAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def asyncapi(
    check: Annotated[
        bool, typer.Option("--check", help="fail if the document differs from the code")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="where to write it (default: docs/asyncapi.json)"),
    ] = None,
) -> None:
    """Generate the AsyncAPI document of every event, routing key and core queue."""
    from services.router.asyncapi import DOCUMENT, render_document

    target = output or DOCUMENT
    document = render_document()
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != document:
            typer.echo(f"{target} is out of date with the code: run `nps asyncapi`", err=True)
            raise typer.Exit(code=1)
        typer.echo(f"{target}: up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document, encoding="utf-8")
    typer.echo(f"{target}: written")


def register(app: typer.Typer) -> None:
    app.command(name="asyncapi")(asyncapi)
