"""The PostgreSQL ledger store (storage.url = postgresql://...): the system of record.

psycopg 3's synchronous API, one connection per store, used by one caller at a time (the
flusher's worker thread; the OIA wallet's lookups have a store of their own). A batch is
COPYed into a temporary table and moved into `ledger` with one INSERT .. SELECT .. ON
CONFLICT (partition, seq) DO NOTHING, all in one transaction: measured faster than
pipelined INSERTs (bench/pg_driver.py). The schema is app/ledger/migrations."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors

from app.ledger import (
    MONEY_KINDS,
    PROFILE_FIELDS,
    TRANSFER_KINDS,
    LedgerConflict,
    LedgerEntry,
    PartitionStats,
    StoredEntry,
    StoreUnavailable,
    TransferLegs,
)
from app.ledger.migrations import MigrationError, apply_migrations
from app.logsafe import without_passwords

T = TypeVar("T")  # what a call's work returns
log = logging.getLogger(__name__)

# A server that does not answer fails the call instead of hanging it (the flusher retries).
CONNECT_TIMEOUT_S = 5
# The longest statement walletd runs is a batch's INSERT .. SELECT; far above it means stuck.
STATEMENT_TIMEOUT_MS = 30_000
# A lock held by someone else (a DBA's ALTER, a stuck copy) fails the batch, not walletd.
LOCK_TIMEOUT_MS = 5_000
# A dead network (no ack from the server) breaks the connection after this long.
TCP_USER_TIMEOUT_MS = 30_000
# A call the server has not answered by then is cut (Watchdog); above STATEMENT_TIMEOUT_MS,
# so a slow statement is ended by the server first, with its own reason.
CALL_TIMEOUT_S = 45.0
# Applying migrations at open (a future one may rebuild an index over the whole ledger).
MIGRATE_TIMEOUT_S = 3600.0
# synchronous_commit on whatever the server's default: the flusher XACKs after COMMIT, so a
# committed batch must be on disk; the rest bound what a hung server can hold up.
SESSION_OPTIONS = ("-c synchronous_commit=on -c statement_timeout={statement} -c lock_timeout={lock} "
                   "-c idle_in_transaction_session_timeout={statement}")

# What libpq reads as meant: user, password and database name percent-encoded (@ / : ? #
# spaces); anything else is refused before libpq sees it, because libpq's own error would
# quote the password (or a piece of it as a host name) into walletd's log.
ESCAPED = r"(?:%[0-9A-Fa-f]{2}"
URL_SHAPE = re.compile(
    rf"postgres(?:ql)?://"
    rf"(?:{ESCAPED}|[^:@/\s%])*(?::{ESCAPED}|[^@/\s%])*)?@)?"  # user:password@ (libpq: up to @ or /)
    rf"{ESCAPED}|[^/?#@\s%])*"  # hosts and ports
    rf"(?:/{ESCAPED}|[^/?#@\s%])*)?"  # database
    rf"(?:\?{ESCAPED}|[^#\s%])*)?")  # parameters (password=..., host=/run/postgresql)
# The ledger table's columns in LedgerEntry's order (row_of), for COPY and INSERT .. SELECT.
COLUMNS = ("partition", "seq", "entry_id", "player_id", "kind", "amount_minor", "balance_after_minor", "source",
           "ref", "ts_ms", "fp", "operator", "currency", "round_id", "game_id", "round_finished", "code",
           "account_kind", "counterparty")
LIST = ", ".join(COLUMNS)  # the column list as SQL
# Per connection, emptied at every commit (and rollback): the batch as sent.
CREATE_INCOMING = "CREATE TEMP TABLE IF NOT EXISTS ledger_in (LIKE ledger) ON COMMIT DELETE ROWS"
# Text COPY: psycopg adapts each value; measured as fast as any way of sending a batch.
COPY_INCOMING = f"COPY ledger_in ({LIST}) FROM STDIN"
# Only the (partition, seq) conflict is skipped (a batch stored again after a crash): any
# other constraint's violation (ledger_oia_booking) raises and rolls the batch back.
MOVE_INCOMING = (f"INSERT INTO ledger ({LIST}) SELECT {LIST} FROM ledger_in "  # noqa: S608 - constants
                 "ON CONFLICT (partition, seq) DO NOTHING")
# An id of the batch stored with other content (compared as SQLite does): one is enough.
OTHER_CONTENT = """
SELECT i.entry_id FROM ledger_in i JOIN ledger l USING (partition, seq)
WHERE (l.player_id, l.kind, l.amount_minor, l.balance_after_minor, l.ref, l.account_kind)
      IS DISTINCT FROM (i.player_id, i.kind, i.amount_minor, i.balance_after_minor, i.ref, i.account_kind)
ORDER BY i.partition, i.seq LIMIT 1
"""
# A player is stored once; storing it again (a batch after a crash) changes nothing.
INSERT_PLAYER = """
INSERT INTO players (player_id, currency, country, language, name, aliases, created_ms, operator)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (player_id) DO NOTHING
"""
# An entry exactly as inserted, its profile joined from players (only 'open' entries have one).
READ_ENTRIES = """
SELECT l.entry_id, l.partition, l.seq, l.player_id, l.kind, l.amount_minor, l.balance_after_minor,
       l.source, l.ref, l.ts_ms, l.fp, l.operator, l.currency, l.round_id, l.game_id,
       l.round_finished, l.code, l.account_kind, l.counterparty,
       p.currency, p.country, p.language, p.name, p.aliases, p.operator
FROM ledger l LEFT JOIN players p ON l.kind = 'open' AND l.account_kind = '' AND p.player_id = l.player_id
WHERE l.partition = %s AND l.seq > %s ORDER BY l.seq LIMIT %s
"""
# Every transfer id whose legs do not settle it (app/ledger TransferLegs), by id: one read of
# the ledger, as player_sums is (verify only).
UNSETTLED_TRANSFERS = """
SELECT ref, COUNT(*) FILTER (WHERE kind = 'transfer_out'), COUNT(*) FILTER (WHERE kind = 'transfer_in'),
       COUNT(*) FILTER (WHERE kind = 'transfer_reverse'),
       COALESCE(SUM(amount_minor) FILTER (WHERE kind = 'transfer_out'), 0), SUM(amount_minor)
FROM ledger WHERE kind = ANY(%s) GROUP BY ref
HAVING NOT (COUNT(*) FILTER (WHERE kind = 'transfer_out') = 1 AND COUNT(*) FILTER (WHERE kind <> 'transfer_out') = 1
            AND SUM(amount_minor) FILTER (WHERE kind = 'transfer_out') < 0 AND SUM(amount_minor) = 0)
ORDER BY ref LIMIT %s
"""
# The store refuses these rows whatever is retried: the batch is never acknowledged.
REFUSED_ROWS = (errors.IntegrityError, errors.DataError)


def one_line(exc: BaseException) -> str:
    """A driver's error as one line without passwords (libpq's messages span lines)."""
    lines = (line.strip() for line in str(exc).splitlines())
    return without_passwords("; ".join(line for line in lines if line) or type(exc).__name__)


def row_of(e: LedgerEntry) -> tuple[object, ...]:
    return (e.partition, e.seq, e.entry_id, e.player_id, e.kind, e.amount_minor, e.balance_after_minor, e.source,
            e.ref, e.ts_ms, e.fp, e.operator, e.currency, e.round_id, e.game_id, e.round_finished, e.code,
            e.account_kind, e.counterparty)


def entry_of(row: tuple[Any, ...]) -> LedgerEntry:
    """A READ_ENTRIES row as the entry that was inserted."""
    profile = None
    if row[4] == "open":
        # PROFILE_FIELDS order; a missing players row would be a broken store, so fail loudly
        assert row[19] is not None, f"ledger entry {row[0]} opens a player the players table lacks"
        profile = dict(zip(PROFILE_FIELDS, row[19:], strict=True))
    (entry_id, partition, seq, player_id, kind, amount, after, source, ref, ts_ms, fp, operator, currency,
     round_id, game_id, round_finished, code, account_kind, counterparty) = row[:19]
    return LedgerEntry(entry_id, partition, seq, player_id, kind, amount, after, source, ref, ts_ms, profile, fp,
                       operator, currency, round_id, game_id, round_finished, code, account_kind, counterparty)


class Watchdog:
    """Cuts a connection's socket (shutdown: libpq's wait ends, the call fails) if the call
    is still running after timeout_s. A server that stopped answering but whose host still
    acknowledges TCP (the process stopped or hung, a frozen VM) is not ended by
    statement_timeout (the server's own), tcp_user_timeout or keepalives (the kernel
    answers those); only the client's own clock ends that wait."""

    def __init__(self, db: psycopg.Connection, timeout_s: float) -> None:
        assert timeout_s > 0
        self.fd = db.fileno()
        self.timeout_s = timeout_s
        self.fired = False
        self.done = False
        self.guard = threading.Lock()  # cut() never touches the socket after __exit__ (its fd may be reused)
        self.timer = threading.Timer(timeout_s, self.cut)
        self.timer.daemon = True

    def __enter__(self) -> Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.guard:
            self.done = True
        self.timer.cancel()

    def cut(self) -> None:
        with self.guard:
            if self.done:
                return
            self.fired = True
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self.fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)


class PostgresStore:
    def __init__(self, url: str, lock_timeout_ms: int = LOCK_TIMEOUT_MS,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        if not URL_SHAPE.fullmatch(url):
            raise StoreUnavailable(
                "ledger store: storage.url is not a postgresql:// URL libpq reads as meant (not shown: it may hold a "
                "password); percent-encode the user, password and database name (@ as %40, / as %2F, : as %3A, "
                "a space as %20, % as %25)")
        self.url = url
        self.call_timeout_s = call_timeout_s
        self.options = SESSION_OPTIONS.format(statement=STATEMENT_TIMEOUT_MS, lock=int(lock_timeout_ms))
        self.shown = without_passwords(url)
        self.lock = threading.Lock()  # one user at a time: the connection is not shared
        self.db: psycopg.Connection | None = None
        self.closed = False
        try:
            # also proves the URL works before anything runs; a migration may take long
            self.applied = self.call(self.migrate, MIGRATE_TIMEOUT_S)
        except BaseException:
            self.close()  # a store that failed to open holds no connection
            raise
        if self.applied:
            log.info("ledger store %s: applied %s", self.shown, ", ".join(self.applied))

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               options=self.options, application_name="walletd",
                               tcp_user_timeout=TCP_USER_TIMEOUT_MS, keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3)

    def migrate(self, db: psycopg.Connection) -> list[str]:
        # Waiting for another opener's migration, or a long one, is not a stuck statement.
        db.execute("SET statement_timeout = 0")
        db.execute("SET lock_timeout = 0")
        try:
            return apply_migrations(db)
        except MigrationError as exc:
            raise StoreUnavailable(f"ledger store {self.shown}: {exc}") from exc
        finally:
            db.execute("RESET statement_timeout")  # back to the session's own (SESSION_OPTIONS)
            db.execute("RESET lock_timeout")

    def call(self, work: Callable[[psycopg.Connection], T], timeout_s: float | None = None) -> T:
        """work on the connection, opened (again) when there is none; the driver's errors
        leave as StoreUnavailable. A connection the server closed since its last use (a
        restart) is replaced and the work tried once more: every call here is safe to
        repeat (insert skips what it stored). A call still running after timeout_s
        (default: the store's call_timeout_s) has its connection cut: it fails instead of
        waiting for good on a server that stopped answering."""
        with self.lock:
            assert not self.closed, "the ledger store is closed"
            for attempt in (1, 2):
                reused = self.db is not None
                watchdog: Watchdog | None = None
                try:
                    if self.db is None:
                        self.db = self.connect()
                    with Watchdog(self.db, timeout_s or self.call_timeout_s) as watchdog:
                        return work(self.db)
                except REFUSED_ROWS:
                    raise
                except psycopg.Error as exc:
                    broken = self.db is None or self.db.broken or self.db.closed
                    if broken:
                        self.discard()
                    cut = watchdog is not None and watchdog.fired
                    if broken and reused and attempt == 1 and not cut:
                        continue
                    reason = f"no answer within {watchdog.timeout_s:g} s" if cut and watchdog else one_line(exc)
                    raise StoreUnavailable(f"ledger store {self.shown}: {reason}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def discard(self) -> None:
        if self.db is not None:
            with contextlib.suppress(psycopg.Error):
                self.db.close()
        self.db = None

    @contextlib.contextmanager
    def refusals(self) -> Iterator[None]:
        """A row the schema refuses (ledger_oia_booking, a CHECK): the batch is wrong,
        not the store unavailable; nothing of it was stored."""
        try:
            yield
        except REFUSED_ROWS as exc:
            constraint = getattr(exc.diag, "constraint_name", None) or type(exc).__name__
            raise LedgerConflict(
                f"the ledger store refuses this batch ({constraint}: {exc.diag.message_primary}; "
                f"{exc.diag.message_detail or ''}): nothing of it is stored or acknowledged") from exc

    def insert(self, entries: Sequence[LedgerEntry]) -> int:
        if not entries:
            return 0
        # an agent's 'open' entry is refused by ledger_agent_not_opened before this matters
        players = [(e.player_id, e.profile["cur"], e.profile["country"], e.profile["lang"], e.profile["name"],
                    e.profile["aliases"], e.ts_ms, e.profile["op"])
                   for e in entries if e.profile is not None and not e.account_kind]

        def work(db: psycopg.Connection) -> int:
            with db.transaction():
                db.execute(CREATE_INCOMING)
                with db.cursor().copy(COPY_INCOMING) as copy:
                    for entry in entries:
                        copy.write_row(row_of(entry))
                inserted = db.execute(MOVE_INCOMING).rowcount
                if inserted < len(entries):
                    self.check_same(db)
                if players:
                    db.cursor().executemany(INSERT_PLAYER, players)
            return inserted

        with self.refusals():
            inserted = self.call(work)
        assert 0 <= inserted <= len(entries)
        return inserted

    def check_same(self, db: psycopg.Connection) -> None:
        """Raises LedgerConflict (rolling the batch back) when an id of it is stored with other content."""
        row = db.execute(OTHER_CONTENT).fetchone()
        if row is not None:
            raise LedgerConflict(
                f"ledger entry {row[0]} is already stored with other content: the Redis being flushed did not "
                f"write this ledger store (its data was lost or replaced); nothing of this batch is stored "
                f"or acknowledged")

    def seq_max(self, partition: int) -> int:
        row = self.call(lambda db: db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE partition = %s", (partition,)).fetchone())
        assert row is not None
        return int(row[0])

    def player_sums(self) -> dict[str, int]:
        # Journal entries move nothing and may name a player that never existed (a refusal).
        rows = self.call(lambda db: db.execute(
            "SELECT player_id, SUM(amount_minor) FROM ledger WHERE kind = ANY(%s) AND account_kind = '' "
            "GROUP BY player_id", (list(MONEY_KINDS),)).fetchall())
        return {str(player): int(total) for player, total in rows}  # SUM of bigint is numeric: exact

    def unsettled_transfers(self, limit: int) -> list[TransferLegs]:
        assert limit > 0
        rows = self.call(lambda db: db.execute(UNSETTLED_TRANSFERS, (list(TRANSFER_KINDS), limit)).fetchall())
        return [TransferLegs(str(ref), *(int(value) for value in rest)) for ref, *rest in rows]

    def partition_stats(self) -> dict[int, PartitionStats]:
        rows = self.call(lambda db: db.execute(
            "SELECT partition, COUNT(*), MAX(seq) FROM ledger GROUP BY partition").fetchall())
        return {int(part): PartitionStats(int(count), int(top)) for part, count, top in rows}

    def find(self, player_id: str, source: str, ref: str) -> list[StoredEntry]:
        rows = self.call(lambda db: db.execute(
            "SELECT kind, amount_minor, balance_after_minor, fp, code FROM ledger "
            "WHERE player_id = %s AND ref = %s AND source = %s ORDER BY partition, seq",
            (player_id, ref, source)).fetchall())
        return [StoredEntry(*row) for row in rows]

    def holds_entries(self, source: str) -> bool:
        row = self.call(lambda db: db.execute("SELECT 1 FROM ledger WHERE source = %s LIMIT 1", (source,)).fetchone())
        return row is not None

    def read(self, partition: int, after_seq: int, limit: int) -> list[LedgerEntry]:
        assert limit > 0
        rows = self.call(lambda db: db.execute(READ_ENTRIES, (partition, after_seq, limit)).fetchall())
        return [entry_of(row) for row in rows]

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.discard()
