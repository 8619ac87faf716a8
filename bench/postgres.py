"""The PostgreSQL a bench run measures the flusher against: WALLETD_BENCH_POSTGRES_URL
when set (its user needs CREATEDB: each measurement gets a database of its own,
dropped after), else a private server from the `pgserver` wheel (PostgreSQL 16,
Unix socket only, deleted at the end), as the tests do."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.drain import POSTGRES_ENV as ENV

# What decides a commit's cost: printed with every rate measured against the server.
SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "server_version")


@contextmanager
def server(work: Path) -> Iterator[str]:
    """The server's URL (its maintenance database)."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    import pgserver  # noqa: PLC0415 - only when no server is named

    private = pgserver.get_server(work / "postgres", cleanup_mode="delete")
    try:
        yield private.get_uri()
    finally:
        private.cleanup()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


@contextmanager
def database(url: str, label: str) -> Iterator[str]:
    """An empty database of its own on the server at url, dropped after."""
    name = f"walletd_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings(url: str) -> dict[str, str]:
    with psycopg.connect(url) as connection:
        return {name: str(connection.execute(f"SHOW {name}").fetchone()[0]) for name in SETTINGS}  # type: ignore[index]
