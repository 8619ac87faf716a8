"""Ledger entries and the interface every ledger store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from app.logsafe import without_passwords

PROFILE_FIELDS = ("cur", "country", "lang", "name", "aliases", "op")  # op: the owning operator

# The legs of a transfer between two accounts, each booked in its own account's partition
# (docs/transfers.md): the debit at the source, then the credit at the destination, or the
# debit given back when the credit was made impossible. Source 'transfer', ref the transfer
# id (app/ids.py), counterparty the other account.
TRANSFER_KINDS = ("transfer_out", "transfer_in", "transfer_reverse")
# The source of every transfer leg, and of the tombstone that makes a transfer's credit impossible.
TRANSFER_SOURCE = "transfer"
# Entries that move money (amount_minor may still be 0: a cancel of a refused transaction).
MONEY_KINDS = ("open", "bet", "win", "refund", "cancel", "deposit", "withdraw", "reverse", *TRANSFER_KINDS)
# Entries that record a decision and move nothing (amount_minor is 0, balance_after_minor
# the balance then), so the store alone can rebuild Redis (README "Rebuild"):
#   refusal    an OIA changebalance refused and recorded (code: the OP_xx answered)
#   tombstone  a cancel before its transaction (OIA), a StarGame request settled as
#              never landed (reconciler), or a transfer's credit made impossible before
#              its debit is given back (source 'transfer'): a later booking with this ref is refused
#   block, unblock   the player's blocked state
#   finish     an OIA round marked finished
JOURNAL_KINDS = ("refusal", "tombstone", "block", "unblock", "finish")
KINDS = MONEY_KINDS + JOURNAL_KINDS
# Optional stream fields (lua/lib/ledger.lua's `extra`) -> LedgerEntry attribute; absent = ''.
# storage.url schemes of the PostgreSQL store (libpq's two spellings).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
OPTIONAL_FIELDS = {"op": "operator", "cur": "currency", "round": "round_id", "game": "game_id",
                   "fin": "round_finished", "fp": "fp", "code": "code", "akind": "account_kind",
                   "peer": "counterparty"}
# LedgerEntry.account_kind: whose account the entry moves. '' a player's (every entry
# written before agents existed), ACCOUNT_AGENT an agent's point wallet (app/keys.py agent).
ACCOUNT_AGENT = "agent"
ACCOUNT_KINDS = ("", ACCOUNT_AGENT)
# Transfers reported per call of unsettled_transfers (verify): the ones in flight are
# bounded by the recovery deadline times the transfer rate; more means something is wrong.
UNSETTLED_MAX = 10_000


class LedgerEntry(msgspec.Struct, frozen=True):
    entry_id: str  # "<partition>:<seq>", unique forever
    partition: int
    seq: int
    player_id: str
    kind: str  # one of KINDS
    amount_minor: int  # signed: debits are negative; 0 for JOURNAL_KINDS
    balance_after_minor: int
    source: str  # oia, stargame, admin
    ref: str  # oia: "<operator>|<transaction id>"; stargame: the request id; admin: the caller's reference
    ts_ms: int
    profile: dict[str, str] | None = None  # only on 'open' entries
    fp: str = ""  # OIA bookings: the request's fingerprint (tells a retry from other data)
    operator: str = ""  # the operator the decision was made for ('' where none: StarGame, admin)
    currency: str = ""  # the account's currency ('' on entries written before it was kept)
    round_id: str = ""
    game_id: str = ""
    round_finished: str = ""  # OIA round_finished as sent: '1', '0' or '' (absent)
    code: str = ""  # refusal: the answer given (OP_xx)
    account_kind: str = ""  # one of ACCOUNT_KINDS: '' a player's account, 'agent' an agent's
    counterparty: str = ""  # transfer legs: the other account, "<kind>:<id>" (app/ids.py account_ref)


class TransferLegs(msgspec.Struct, frozen=True):
    """One transfer id's legs as stored (kinds TRANSFER_KINDS): settled when it has exactly
    one transfer_out (negative) and one transfer_in or transfer_reverse, summing to 0; in
    flight when it has only its transfer_out."""

    transfer_id: str
    outs: int
    ins: int
    reverses: int
    out_minor: int  # the transfer_out amounts' sum (negative: a debit)
    net_minor: int  # every leg's amount summed: 0 when settled, -amount while in flight

    def in_flight(self) -> bool:
        return self.outs == 1 and self.ins == 0 and self.reverses == 0 and self.out_minor < 0


class StoredEntry(msgspec.Struct, frozen=True):
    """What a lookup by ref needs of one stored entry."""

    kind: str
    amount_minor: int
    balance_after_minor: int
    fp: str  # '' when stored before fingerprints were kept
    code: str = ""  # refusal entries: the answer given


class LedgerConflict(Exception):
    """An entry id already stored with other content: the Redis being flushed is not
    the one that wrote the store (its data was lost or replaced); or an entry the store's
    constraints refuse (PostgreSQL: a second booking of an OIA transaction id, a second
    leg of a transfer; every store: an agent's 'open' entry, see agent_opening). The
    batch stored nothing and is never acknowledged."""


class StoreUnavailable(Exception):
    """The ledger store cannot be opened or used now (an unsupported storage.url, a
    file another process holds locked, an unreadable file): the call stored nothing.
    Every store raises this kind, not its driver's, so callers need no driver."""


class PartitionStats(msgspec.Struct, frozen=True):
    count: int
    seq_max: int


class LedgerStore(Protocol):
    def insert(self, entries: Sequence[LedgerEntry]) -> int:
        """Store entries in one transaction, skipping ids already stored with the same
        content; returns how many were new. An id stored with other content raises
        LedgerConflict and stores nothing."""

    def player_sums(self) -> dict[str, int]:
        """Sum of amount_minor of money kinds per player (the 'open' entry is the opening
        balance); players' accounts only (account_kind ''), never an agent's."""

    def unsettled_transfers(self, limit: int) -> list[TransferLegs]:
        """The transfer ids whose legs do not settle them (TransferLegs: in flight, or
        wrong), by transfer id, at most limit."""

    def partition_stats(self) -> dict[int, PartitionStats]: ...

    def seq_max(self, partition: int) -> int:
        """The highest entry sequence stored for the partition (0 if none)."""

    def find(self, player_id: str, source: str, ref: str) -> list[StoredEntry]:
        """The player's entries with this source and ref, oldest first."""

    def holds_entries(self, source: str) -> bool:
        """Whether any entry of this source is stored."""

    def read(self, partition: int, after_seq: int, limit: int) -> list[LedgerEntry]:
        """The partition's entries with seq > after_seq, in seq order, at most limit, each
        exactly as inserted (profile included): for rebuild and ledger copy."""

    def close(self) -> None: ...


# OPTIONAL_FIELDS' stream names in LedgerEntry's attribute order (after profile): from_stream
# passes them by position, a third faster than by keyword (it runs once per entry flushed).
OPTIONAL_IN_ORDER = tuple({attribute: name for name, attribute in OPTIONAL_FIELDS.items()}[attribute]
                          for attribute in LedgerEntry.__struct_fields__[11:])
assert LedgerEntry.__struct_fields__[10] == "profile" and len(OPTIONAL_IN_ORDER) == len(OPTIONAL_FIELDS)


def agent_opening(entries: Sequence[LedgerEntry]) -> LedgerEntry | None:
    """An 'open' entry of an agent's account, which no store can keep yet: an agent's
    profile has no table until agents are built (docs/transfers.md), and the players
    table would take it for a player of the same id."""
    return next((e for e in entries if e.kind == "open" and e.account_kind), None)


def from_stream(fields: dict[str, str]) -> LedgerEntry:
    """A stream entry's fields, as written by lua/lib/ledger.lua."""
    get = fields.get
    entry_id, kind = fields["id"], fields["kind"]
    partition, seq = entry_id.split(":")
    profile = {name: get(name, "") for name in PROFILE_FIELDS} if kind == "open" else None
    return LedgerEntry(entry_id, int(partition), int(seq), fields["player"], kind, int(fields["amount"]),
                       int(fields["balance"]), fields["source"], fields["ref"], int(fields["ts"]), profile,
                       *[get(name, "") for name in OPTIONAL_IN_ORDER])


def open_store(url: str, call_timeout_s: float | None = None) -> LedgerStore:
    """call_timeout_s: how long a PostgreSQL call may go unanswered before it fails
    (default: the store's own; SQLite's calls are bounded by its busy time-out)."""
    if url.startswith("sqlite:///"):
        from app.ledger.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(url.removeprefix("sqlite:///"))
    if url.startswith(POSTGRES_SCHEMES):
        from app.ledger.postgres import PostgresStore  # noqa: PLC0415 - the driver only when used

        return PostgresStore(url) if call_timeout_s is None else PostgresStore(url, call_timeout_s=call_timeout_s)
    raise StoreUnavailable(f"unsupported storage.url {without_passwords(url)!r}: use sqlite:///PATH or "
                           f"postgresql://user:password@host:port/database")


def migrate_store(url: str) -> list[str]:
    """Brings the store at url to this walletd's schema; returns what was applied
    (PostgreSQL: the migration files; SQLite adds its columns in place on every open)."""
    if url.startswith(POSTGRES_SCHEMES):
        from app.ledger.postgres import PostgresStore  # noqa: PLC0415 - the driver only when used

        store = PostgresStore(url)
        store.close()
        return store.applied
    open_store(url).close()
    return []
