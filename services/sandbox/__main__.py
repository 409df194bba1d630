"""``python -m services.sandbox``: the same options as ``nps sandbox``."""

import typer

from services.sandbox.commands import register

cli = typer.Typer(add_completion=False)
register(cli)
cli()
