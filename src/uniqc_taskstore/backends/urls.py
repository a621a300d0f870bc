"""Database URLs: parsed once with clear refusals, bare schemes mapped to our drivers,
and every credential masked before a URL is shown to anybody.

``postgres://`` and ``postgresql://`` mean psycopg 3, ``mysql://`` and ``mariadb://``
mean PyMySQL: the drivers the ``[postgresql]`` and ``[mysql]`` extras install.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..errors import DatabaseError, InvalidInputError

OUR_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
"""The driver a bare scheme means, per database family."""

EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
"""The pip extra of ``uniqc-taskstore`` that installs each family's driver."""

_SCHEME_ALIASES = {"postgres": "postgresql"}
_MASK = "***"
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "passphrase")
_USERINFO_PASSWORD = re.compile(r"(://[^/?#@:]*:)([^/?#]*)(@)")
_QUERY_PARAM = re.compile(r"([?&;]([^=&;#]*)=)([^&;#]*)")


def parse_url(url: str | os.PathLike[str] | URL, *, source: str = "url") -> URL:
    """``url`` parsed, with a bare scheme (``postgresql://``) naming our driver.

    Raises :class:`InvalidInputError` naming ``source`` (the argument or environment
    variable the URL came from) for a file path or anything SQLAlchemy cannot parse;
    the value shown has its credentials masked."""
    if isinstance(url, URL):
        parsed = url
    else:
        text = os.fspath(url)
        if isinstance(url, os.PathLike) or "://" not in text:
            raise InvalidInputError(source, mask_text(text), _not_a_url(text))
        try:
            parsed = make_url(text)
        except (ArgumentError, ValueError):
            # ValueError: a port that is not a number. Raised without the original,
            # whose text may quote the URL, password included.
            raise InvalidInputError(
                source,
                mask_text(text),
                "is not a database URL SQLAlchemy can parse; write it as "
                "postgresql://user@host/db, mysql://user@host/db or sqlite:///PATH "
                "(percent-encode special characters in the password)",
            ) from None
    family, _, driver = parsed.drivername.partition("+")
    family = _SCHEME_ALIASES.get(family, family)
    driver = driver or OUR_DRIVERS.get(family, "")
    return parsed.set(drivername=f"{family}+{driver}" if driver else family)


def require_driver(url: URL, shown: str | None = None) -> None:
    """Refuse, naming what to install, a URL whose driver is not importable. The error
    names the URL as ``shown`` (as the caller wrote it, credentials masked), else
    ``url`` as parsed (its bare scheme completed with our driver)."""
    where = shown if shown is not None else safe_url(url)
    family = url.get_backend_name()
    driver = url.get_driver_name()
    ours = OUR_DRIVERS.get(family)
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise InvalidInputError(
            "url",
            where,
            f"SQLAlchemy has no driver {driver!r} for {family}; write {family}:// to use "
            f"{ours} (pip install 'uniqc-taskstore[{EXTRAS[family]}]')",
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError:
        extra = f"pip install 'uniqc-taskstore[{EXTRAS[family]}]'"
        if driver == ours:
            advice = f"install it with {extra}"
        else:
            advice = (
                f"install that driver, or write {family}:// to use {ours}, which "
                f"uniqc-taskstore is tested with ({extra})"
            )
        raise DatabaseError(
            f"{where}: the {family} driver {driver!r} is not installed; {advice}."
        ) from None


def safe_url(url: URL) -> str:
    """``url`` as text with the password and every secret-looking query value masked."""
    query = {key: (_MASK if _is_secret(key) else value) for key, value in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def secrets_of(url: URL) -> list[str]:
    """Every credential in ``url``: its password and secret-looking query values."""
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        if _is_secret(key):
            found.extend([value] if isinstance(value, str) else value)
    return [secret for secret in found if secret]


def scrub(text: str, url: URL) -> str:
    """``text`` (a driver's message) with every credential of ``url`` masked."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def url_digest(url: URL) -> str:
    """A digest of the full URL, credentials included: tells apart two logins without
    keeping either password readable."""
    return hashlib.sha256(url.render_as_string(hide_password=False).encode()).hexdigest()


def mask_text(text: str) -> str:
    """A string that did not parse as a URL, with whatever looks like a credential
    masked: the userinfo password and secret-looking query values."""
    text = _USERINFO_PASSWORD.sub(rf"\1{_MASK}\3", text)
    return _QUERY_PARAM.sub(
        lambda m: m.group(1) + (_MASK if _is_secret(m.group(2)) else m.group(3)), text
    )


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _is_dir(text: str) -> bool:
    """Whether ``text`` names a directory; False for a name the system refuses (too
    long, a NUL), where Python 3.11's ``Path.is_dir`` raises instead."""
    try:
        return Path(text).expanduser().is_dir()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user with no home
        return False


def _not_a_url(text: str) -> str:
    if not text.strip():
        return "is empty; give a database URL such as postgresql://user@host/db"
    what = "a directory" if text and _is_dir(text) else "a file path"
    return (
        f"looks like {what}, not a database URL; for a directory holding tasks.sqlite use "
        "TaskStore(cache_dir=DIR) (CLI: --cache-dir DIR), for a SQLite file the URL "
        "sqlite:///PATH"
    )
