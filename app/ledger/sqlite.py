"""The embedded ledger store: SQLite in WAL mode with synchronous=FULL."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from app.ledger import (
    ACCOUNT_KINDS,
    MONEY_KINDS,
    PROFILE_FIELDS,
    TRANSFER_KINDS,
    LedgerConflict,
    LedgerEntry,
    PartitionStats,
    StoredEntry,
    StoreUnavailable,
    TransferLegs,
    agent_opening,
)

# entry_id is unique: a batch stored again after a crash inserts nothing twice.
SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    entry_id TEXT PRIMARY KEY,
    partition INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    player_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    balance_after_minor INTEGER NOT NULL,
    source TEXT NOT NULL,
    ref TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    fp TEXT NOT NULL DEFAULT '',
    operator TEXT NOT NULL DEFAULT '',
    currency TEXT NOT NULL DEFAULT '',
    round_id TEXT NOT NULL DEFAULT '',
    game_id TEXT NOT NULL DEFAULT '',
    round_finished TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL DEFAULT '',
    account_kind TEXT NOT NULL DEFAULT '',
    counterparty TEXT NOT NULL DEFAULT '',
    UNIQUE (partition, seq)
);
CREATE INDEX IF NOT EXISTS ledger_player ON ledger (player_id);
CREATE INDEX IF NOT EXISTS ledger_ref ON ledger (ref);
CREATE TABLE IF NOT EXISTS players (
    player_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    country TEXT NOT NULL,
    language TEXT NOT NULL,
    name TEXT NOT NULL,
    aliases TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    operator TEXT NOT NULL DEFAULT ''
);
"""

# An entry already stored is skipped here and compared (SAME_ENTRY) by the caller.
INSERT_ENTRY = """
INSERT INTO ledger (entry_id, partition, seq, player_id, kind, amount_minor,
                    balance_after_minor, source, ref, ts_ms, fp, operator, currency,
                    round_id, game_id, round_finished, code, account_kind, counterparty)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

# Columns added after the first release: files written before get them in place
# (their rows read as '').
ADDED_COLUMNS = ("fp", "operator", "currency", "round_id", "game_id", "round_finished", "code", "account_kind",
                 "counterparty")
# Kinds as an SQL list (constants, never input).
MONEY_SQL = ",".join(f"'{kind}'" for kind in MONEY_KINDS)
TRANSFER_SQL = ",".join(f"'{kind}'" for kind in TRANSFER_KINDS)
# verify's pairing of transfer legs (app/ledger/transfer_check.py); the partial index
# holds the legs only, so this reads no other entry.
CREATE_TRANSFER_INDEX = f"CREATE INDEX IF NOT EXISTS ledger_transfer ON ledger (ref) WHERE kind IN ({TRANSFER_SQL})"
# Every transfer id whose legs do not settle it (app/ledger TransferLegs), by id.
UNSETTLED_TRANSFERS = f"""
SELECT ref, SUM(kind = 'transfer_out'), SUM(kind = 'transfer_in'), SUM(kind = 'transfer_reverse'),
       SUM(CASE WHEN kind = 'transfer_out' THEN amount_minor ELSE 0 END), SUM(amount_minor)
FROM ledger WHERE kind IN ({TRANSFER_SQL}) GROUP BY ref
HAVING NOT (SUM(kind = 'transfer_out') = 1 AND SUM(kind <> 'transfer_out') = 1
            AND SUM(CASE WHEN kind = 'transfer_out' THEN amount_minor ELSE 0 END) < 0 AND SUM(amount_minor) = 0)
ORDER BY ref LIMIT ?
"""  # noqa: S608 - constants

# An entry exactly as inserted, its profile joined from players (only 'open' entries have one).
READ_ENTRIES = """
SELECT l.entry_id, l.partition, l.seq, l.player_id, l.kind, l.amount_minor, l.balance_after_minor,
       l.source, l.ref, l.ts_ms, l.fp, l.operator, l.currency, l.round_id, l.game_id,
       l.round_finished, l.code, l.account_kind, l.counterparty,
       p.currency, p.country, p.language, p.name, p.aliases, p.operator
FROM ledger l LEFT JOIN players p ON l.kind = 'open' AND l.account_kind = '' AND p.player_id = l.player_id
WHERE l.partition = ? AND l.seq > ? ORDER BY l.seq LIMIT ?
"""

# A player is stored once; storing it again (a batch after a crash) changes nothing.
INSERT_PLAYER = """
INSERT INTO players (player_id, currency, country, language, name, aliases, created_ms, operator)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""


# What must match when an entry id is already stored (a re-flushed batch after a
# crash): anything else means another Redis wrote these ids.
SAME_ENTRY = ("SELECT entry_id, player_id, kind, amount_minor, balance_after_minor, ref, account_kind FROM ledger "
              "WHERE entry_id IN ({})")
# Ids per IN (...) query: below SQLite's oldest bound-parameter limit (999).
CONFLICT_CHECK_CHUNK = 500


# How long a write waits for another connection's lock before the batch fails
# (the flusher then retries it with backoff; nothing is lost, only delayed).
BUSY_TIMEOUT_MS = 5000


# SQLite's errors that are walletd's own mistakes, not the store being unusable.
PROGRAMMER_ERRORS = (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError)


def add_operator_column(db: sqlite3.Connection) -> None:
    """Stores made before operator ownership lack players.operator ('' = no owner)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(players)")}
    if "operator" not in columns:
        db.execute("ALTER TABLE players ADD COLUMN operator TEXT NOT NULL DEFAULT ''")


def entry_of(row: tuple[object, ...]) -> LedgerEntry:
    """A READ_ENTRIES row as the entry that was inserted."""
    (entry_id, partition, seq, player_id, kind, amount, after, source, ref, ts_ms, fp, operator,
     currency, round_id, game_id, round_finished, code, account_kind, counterparty) = row[:19]
    profile = None
    if kind == "open":
        # PROFILE_FIELDS order; a missing players row would be a broken store, so fail loudly
        assert row[19] is not None, f"ledger entry {entry_id} opens a player the players table lacks"
        profile = dict(zip(PROFILE_FIELDS, (str(value) for value in row[19:]), strict=True))
    return LedgerEntry(
        str(entry_id), int(str(partition)), int(str(seq)), str(player_id), str(kind), int(str(amount)),
        int(str(after)), str(source), str(ref), int(str(ts_ms)), profile, str(fp), str(operator), str(currency),
        str(round_id), str(game_id), str(round_finished), str(code), str(account_kind), str(counterparty))


def refuse_unstorable(entries: Sequence[LedgerEntry]) -> None:
    """What PostgreSQL's CHECKs refuse that SQLite's schema does not say: an account kind
    this walletd does not know, an agent's 'open' entry (app/ledger agent_opening)."""
    unknown = next((e for e in entries if e.account_kind not in ACCOUNT_KINDS), None)
    if unknown is not None:
        raise LedgerConflict(f"ledger entry {unknown.entry_id} names account kind {unknown.account_kind!r:.20}, "
                             f"which this walletd does not know: nothing of this batch is stored or acknowledged")
    opening = agent_opening(entries)
    if opening is not None:
        raise LedgerConflict(f"ledger entry {opening.entry_id} opens an agent's account, which this walletd cannot "
                             f"store yet: nothing of this batch is stored or acknowledged")


class SqliteStore:
    def __init__(self, path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.lock = threading.Lock()  # used from the flusher's worker thread: one user at a time
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"ledger store {path}: {exc}") from exc
        try:
            with self.using() as db:
                db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed batch survives power loss before it is XACKed.
                db.execute("PRAGMA synchronous=FULL")
                db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                db.executescript(SCHEMA)
                self.migrate()
        except BaseException:
            self.db.close()  # a store that failed to open holds no connection to its file
            raise

    @contextlib.contextmanager
    def using(self) -> Iterator[sqlite3.Connection]:
        """The connection, one user at a time; SQLite's errors (locked by another process,
        I/O, not a database) leave as StoreUnavailable, the store interface's kind.
        A programmer's error (a closed store, a bad statement) stays what it is."""
        with self.lock:
            try:
                yield self.db
            except PROGRAMMER_ERRORS:
                raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"ledger store {self.path}: {exc}") from exc

    def migrate(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(ledger)")}
        for column in ADDED_COLUMNS:
            if column not in columns:
                self.db.execute(f"ALTER TABLE ledger ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        add_operator_column(self.db)
        self.db.execute(CREATE_TRANSFER_INDEX)

    def insert(self, entries: Sequence[LedgerEntry]) -> int:
        refuse_unstorable(entries)
        rows = [
            (e.entry_id, e.partition, e.seq, e.player_id, e.kind, e.amount_minor,
             e.balance_after_minor, e.source, e.ref, e.ts_ms, e.fp, e.operator, e.currency,
             e.round_id, e.game_id, e.round_finished, e.code, e.account_kind, e.counterparty)
            for e in entries
        ]
        players = [
            (e.player_id, e.profile["cur"], e.profile["country"], e.profile["lang"],
             e.profile["name"], e.profile["aliases"], e.ts_ms, e.profile["op"])
            for e in entries if e.profile is not None
        ]
        with self.using():
            before = self.db.total_changes
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(INSERT_ENTRY, rows)
                inserted = self.db.total_changes - before
                if inserted < len(rows):
                    self.check_same(entries)
                self.db.executemany(INSERT_PLAYER, players)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self.db.execute("ROLLBACK")
                raise
        assert 0 <= inserted <= len(rows)
        return inserted

    def check_same(self, entries: Sequence[LedgerEntry]) -> None:
        """Raises LedgerConflict when an already stored id holds other content (caller holds the lock)."""
        for start in range(0, len(entries), CONFLICT_CHECK_CHUNK):
            chunk = entries[start:start + CONFLICT_CHECK_CHUNK]
            query = SAME_ENTRY.format(",".join("?" * len(chunk)))
            stored = {row[0]: row[1:] for row in self.db.execute(query, [e.entry_id for e in chunk])}
            for e in chunk:
                if stored[e.entry_id] != (e.player_id, e.kind, e.amount_minor, e.balance_after_minor, e.ref,
                                          e.account_kind):
                    raise LedgerConflict(
                        f"ledger entry {e.entry_id} is already stored with other content: the Redis being "
                        f"flushed did not write this ledger store (its data was lost or replaced); nothing "
                        f"of this batch is stored or acknowledged")

    def seq_max(self, partition: int) -> int:
        with self.using():
            row = self.db.execute("SELECT MAX(seq) FROM ledger WHERE partition = ?", (partition,)).fetchone()
            return int(row[0] or 0)

    def player_sums(self) -> dict[str, int]:
        with self.using():
            # Journal entries move nothing and may name a player that never existed (a refusal).
            cursor = self.db.execute(
                f"SELECT player_id, SUM(amount_minor) FROM ledger WHERE kind IN ({MONEY_SQL}) "  # noqa: S608 - constants
                "AND account_kind = '' GROUP BY player_id")
            return {player: int(total) for player, total in cursor}

    def unsettled_transfers(self, limit: int) -> list[TransferLegs]:
        assert limit > 0
        with self.using():
            rows = self.db.execute(UNSETTLED_TRANSFERS, (limit,)).fetchall()
        return [TransferLegs(str(ref), *(int(value) for value in rest)) for ref, *rest in rows]

    def partition_stats(self) -> dict[int, PartitionStats]:
        with self.using():
            cursor = self.db.execute("SELECT partition, COUNT(*), MAX(seq) FROM ledger GROUP BY partition")
            return {part: PartitionStats(count, seq_max) for part, count, seq_max in cursor}

    def find(self, player_id: str, source: str, ref: str) -> list[StoredEntry]:
        with self.using():
            cursor = self.db.execute(
                "SELECT kind, amount_minor, balance_after_minor, fp, code FROM ledger "
                "WHERE ref = ? AND source = ? AND player_id = ? ORDER BY partition, seq", (ref, source, player_id))
            return [StoredEntry(kind, int(amount), int(after), fp, code) for kind, amount, after, fp, code in cursor]

    def read(self, partition: int, after_seq: int, limit: int) -> list[LedgerEntry]:
        assert limit > 0
        with self.using():
            rows = self.db.execute(READ_ENTRIES, (partition, after_seq, limit)).fetchall()
        return [entry_of(row) for row in rows]

    def holds_entries(self, source: str) -> bool:
        with self.using():
            return self.db.execute("SELECT 1 FROM ledger WHERE source = ? LIMIT 1", (source,)).fetchone() is not None

    def close(self) -> None:
        with self.lock:
            self.db.close()
