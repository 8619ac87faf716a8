"""Ledger entries and the interface every ledger store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

PROFILE_FIELDS = ("cur", "country", "lang", "name", "aliases", "op")  # op: the owning operator


class LedgerEntry(msgspec.Struct, frozen=True):
    entry_id: str  # "<partition>:<seq>", unique forever
    partition: int
    seq: int
    player_id: str
    kind: str  # open, bet, win, refund, cancel, deposit, withdraw, reverse (StarGame reconciler)
    amount_minor: int  # signed: debits are negative
    balance_after_minor: int
    source: str
    ref: str
    ts_ms: int
    profile: dict[str, str] | None = None  # only on 'open' entries
    fp: str = ""  # OIA bookings: the request's fingerprint (tells a retry from other data)


class StoredEntry(msgspec.Struct, frozen=True):
    """What a lookup by ref needs of one stored entry."""

    kind: str
    amount_minor: int
    balance_after_minor: int
    fp: str  # '' when stored before fingerprints were kept


class LedgerConflict(Exception):
    """An entry id already stored with other content: the Redis being flushed is not
    the one that wrote the store (its data was lost or replaced). Never acknowledged."""


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
        """Sum of amount_minor per player (the 'open' entry is the opening balance)."""

    def partition_stats(self) -> dict[int, PartitionStats]: ...

    def seq_max(self, partition: int) -> int:
        """The highest entry sequence stored for the partition (0 if none)."""

    def find(self, player_id: str, source: str, ref: str) -> list[StoredEntry]:
        """The player's entries with this source and ref, oldest first."""

    def holds_entries(self, source: str) -> bool:
        """Whether any entry of this source is stored."""

    def close(self) -> None: ...


def from_stream(fields: dict[str, str]) -> LedgerEntry:
    """A stream entry's fields, as written by lua/lib/ledger.lua."""
    partition, seq = fields["id"].split(":")
    profile = None
    if fields["kind"] == "open":
        profile = {name: fields.get(name, "") for name in PROFILE_FIELDS}
    return LedgerEntry(
        entry_id=fields["id"], partition=int(partition), seq=int(seq),
        player_id=fields["player"], kind=fields["kind"],
        amount_minor=int(fields["amount"]), balance_after_minor=int(fields["balance"]),
        source=fields["source"], ref=fields["ref"], ts_ms=int(fields["ts"]), profile=profile,
        fp=fields.get("fp", ""),
    )


def open_store(url: str) -> LedgerStore:
    if url.startswith("sqlite:///"):
        from app.ledger.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(url.removeprefix("sqlite:///"))
    raise StoreUnavailable(f"unsupported storage.url {url!r}: use sqlite:///PATH")
