"""Inputs in object storage (``s3://``, ``gs://``, ``az://``, ``https://``) through fsspec:
credentials and endpoints come from the store's own environment and configuration files
(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL…), as the
store's own tools take them. A missing object, a denied read or an unreachable store is an
``InputError`` naming the URL (never a credential)."""

from __future__ import annotations

import glob
from typing import Any

from pipeline.errors import InputError


def _store(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: cannot read this kind of URL ({exc})", path=url) from exc


def _unreadable(url: str, exc: BaseException) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{url}: no such object (or bucket); check the URL", path=url)
    if isinstance(exc, PermissionError):
        return InputError(f"{url}: access denied; check the credentials the store is given", path=url)
    what = type(exc).__name__
    return InputError(
        f"{url}: cannot be read ({what}); check the URL and that the store is reachable", path=url
    )


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://"


def object_size(url: str) -> int:
    """The stored size of one object; an error if it is missing, denied or unreachable."""
    fs, path = _store(url)
    try:
        info = fs.info(path)
    except Exception as exc:
        raise _unreadable(url, exc) from exc
    if info.get("type") == "directory":
        raise InputError(f"{url}: a prefix, not an object; end it with / to read the objects in it", path=url)
    return int(info["size"])


def expanded_url(url: str, ignored: list[dict[str, str]]) -> tuple[list[tuple[str, int | None]] | None, str]:
    """A glob's matches or a prefix's (ending in ``/``) objects, not recursively, each with its
    size (None: a sub-prefix), in name order; hidden names ignored; None for one object."""
    from pipeline.extract.inputs import ignored_entry

    if not (glob.has_magic(url) or url.endswith("/")):
        return None, ""
    fs, path = _store(url)
    try:
        entries = [fs.info(p) for p in fs.glob(path)] if glob.has_magic(url) else fs.ls(path, detail=True)
    except Exception as exc:
        raise _unreadable(url, exc) from exc
    if not entries and glob.has_magic(url):
        raise InputError(f"{url}: no object matches this pattern", path=url)
    found = []
    for entry in sorted(entries, key=lambda e: e["name"]):
        name = _scheme(url) + entry["name"].rstrip("/")
        if name.rsplit("/", 1)[-1].startswith("."):
            ignored.append(ignored_entry(name, "hidden"))
        else:
            found.append((name, None if entry.get("type") == "directory" else int(entry["size"])))
    return found, "no object matching it" if glob.has_magic(url) else "a prefix without"
