"""Which PostgreSQL driver the ledger store uses, by measurement: inserts ROWS ledger
entries in batches of BATCH (one transaction per batch, synchronous_commit = on, the
ledger table of app/ledger/migrations) with each way of writing, and prints rows/s.

    python3 -m bench.pg_driver [--rows 200000] [--batch 500] [--url postgresql://...]

Without --url it starts a private PostgreSQL 16 from the pgserver wheel in a temp dir.
Each way gets a fresh database. Ways:
- psycopg-copy:  psycopg 3 (sync), COPY into a temp table, INSERT .. SELECT .. ON CONFLICT
- psycopg-pipe:  psycopg 3 (sync), executemany of INSERT .. ON CONFLICT in pipeline mode
- asyncpg-copy:  asyncpg, copy_records_to_table into a temp table, INSERT .. SELECT
- asyncpg-many:  asyncpg, executemany of INSERT .. ON CONFLICT
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg

from app.ledger import LedgerEntry
from app.ledger.migrations import apply_migrations
from app.ledger.postgres import COLUMNS, COPY_INCOMING, CREATE_INCOMING, MOVE_INCOMING

ROWS = 200_000  # enough batches (400) that a run takes seconds, not noise
BATCH = 500  # the flusher's default batch (flusher.batch_max)
LIST = ", ".join(COLUMNS)  # the column list as SQL
# One entry per statement, pipelined by executemany (psycopg) / prepared (asyncpg).
INSERT = (f"INSERT INTO ledger ({LIST}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "  # noqa: S608 - constants
          "ON CONFLICT (partition, seq) DO NOTHING")
# As INSERT, in asyncpg's $n placeholders.
INSERT_ASYNCPG = (f"INSERT INTO ledger ({LIST}) "  # noqa: S608 - constants
                  f"VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))}) "
                  "ON CONFLICT (partition, seq) DO NOTHING")


def rows(count: int) -> list[tuple[Any, ...]]:
    entries = [LedgerEntry(f"{n % 16}:{n // 16 + 1}", n % 16, n // 16 + 1, f"p{n % 5000}", "bet", -100, 9900,
                           "oia", f"testcasino|{n}", 1_700_000_000_000 + n, fp=f"BET|p|100|EUR|{n}|1",
                           operator="testcasino", currency="EUR", round_id=str(n), game_id="1",
                           round_finished="0")
               for n in range(count)]
    return [(e.partition, e.seq, e.entry_id, e.player_id, e.kind, e.amount_minor, e.balance_after_minor,
             e.source, e.ref, e.ts_ms, e.fp, e.operator, e.currency, e.round_id, e.game_id,
             e.round_finished, e.code) for e in entries]


def psycopg_copy(url: str, batches: list[list[tuple[Any, ...]]]) -> None:
    with psycopg.connect(url) as db:
        for batch in batches:
            with db.transaction():
                db.execute(CREATE_INCOMING)
                with db.cursor().copy(COPY_INCOMING) as copy:
                    for row in batch:
                        copy.write_row(row)
                assert db.execute(MOVE_INCOMING).rowcount == len(batch)


def psycopg_pipe(url: str, batches: list[list[tuple[Any, ...]]]) -> None:
    with psycopg.connect(url) as db:
        for batch in batches:
            with db.transaction(), db.cursor() as cursor:
                cursor.executemany(INSERT, batch, returning=False)


async def asyncpg_copy_async(url: str, batches: list[list[tuple[Any, ...]]]) -> None:
    db = await asyncpg.connect(url)
    try:
        for batch in batches:
            async with db.transaction():
                await db.execute(CREATE_INCOMING)
                await db.copy_records_to_table("ledger_in", records=batch, columns=COLUMNS)
                assert await db.execute(MOVE_INCOMING) == f"INSERT 0 {len(batch)}"
    finally:
        await db.close()


async def asyncpg_many_async(url: str, batches: list[list[tuple[Any, ...]]]) -> None:
    db = await asyncpg.connect(url)
    try:
        for batch in batches:
            async with db.transaction():
                await db.executemany(INSERT_ASYNCPG, batch)
    finally:
        await db.close()


# name -> how it writes the batches (each opens its own connection).
WAYS: dict[str, Callable[[str, list[list[tuple[Any, ...]]]], None]] = {
    "psycopg-copy": psycopg_copy,
    "psycopg-pipe": psycopg_pipe,
    "asyncpg-copy": lambda url, batches: asyncio.run(asyncpg_copy_async(url, batches)),
    "asyncpg-many": lambda url, batches: asyncio.run(asyncpg_many_async(url, batches)),
}


def fresh(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as db:
        apply_migrations(db)
        assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
    return url


def measure(server_url: str, count: int, batch: int) -> dict[str, float]:
    data = rows(count)
    batches = [data[start:start + batch] for start in range(0, count, batch)]
    rates = {}
    for name, way in WAYS.items():
        url = fresh(server_url, f"bench_{name.replace('-', '_')}")
        start = time.perf_counter()
        way(url, batches)
        rates[name] = count / (time.perf_counter() - start)
        print(f"{name:14} {rates[name]:>10,.0f} rows/s", flush=True)
    return rates


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rows", type=int, default=ROWS)
    args.add_argument("--batch", type=int, default=BATCH)
    args.add_argument("--url", help="a server whose user may CREATE DATABASE (default: a private pgserver)")
    options = args.parse_args()
    if options.url:
        measure(options.url, options.rows, options.batch)
        return
    import pgserver  # noqa: PLC0415 - only without --url

    with tempfile.TemporaryDirectory() as directory:
        server = pgserver.get_server(Path(directory) / "pg", cleanup_mode="delete")
        try:
            measure(server.get_uri(), options.rows, options.batch)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
