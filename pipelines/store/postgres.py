"""Connections to the PostgreSQL that holds a shared catalog, outside DuckDB.

DuckLake talks to its catalog through DuckDB's postgres extension, whose connections come and
go with transactions. What must outlive a transaction (the commit lock, leases) needs a session
of its own: a psycopg connection here, on the same database.
"""

from __future__ import annotations

import re

import psycopg

PREFIX = "postgres:"


def conninfo(catalog_uri: str) -> str:
    """The libpq connection string of a `postgres:<connection string>` catalog URI."""
    if not catalog_uri.startswith(PREFIX):
        raise ValueError(f"not a PostgreSQL catalog: {catalog_uri!r}")
    return catalog_uri[len(PREFIX) :]


def connect(catalog_uri: str) -> psycopg.Connection:
    """An autocommit session on the catalog's database. TCP keepalives make a dead peer (a
    host gone without closing) show up as an error within a minute, not hours."""
    return psycopg.connect(
        conninfo(catalog_uri),
        autocommit=True,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        application_name="driftlab",
    )


_SECRETS = (
    # libpq key=value: password=secret, password = 'se cret'
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"]+)", re.IGNORECASE), r"\1***"),
    # URLs: scheme://user:secret@host
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)"), r"\1***\2"),
)


def redact(text: str | None) -> str | None:
    """`text` with passwords of connection strings and URLs masked: DuckDB's errors quote the
    whole catalog connection string, and `/health` shows errors to anyone."""
    if text is None:
        return None
    for pattern, masked in _SECRETS:
        text = pattern.sub(masked, text)
    return text
