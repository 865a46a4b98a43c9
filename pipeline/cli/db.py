"""``pipeline db start|stop|url``: the embedded PostgreSQL."""

from __future__ import annotations

import typer

from pipeline.cli.common import db_app, guarded
from pipeline.load.server import redact, resolve_url, start_embedded, stop_embedded


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server (it keeps running between commands).

    Example: PIPELINE_HOME=/data/pipeline pipeline db start
    """
    guarded(lambda: typer.echo(redact(start_embedded())))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server.

    Example: pipeline db stop
    """
    guarded(lambda: typer.echo("stopped" if stop_embedded() else "not running"))


@db_app.command("url")
def db_url() -> None:
    """Print the URL of the database the commands use (starting the embedded one if needed).

    Example: psql "$(pipeline db url)"
    """
    guarded(lambda: typer.echo(redact(resolve_url())))
