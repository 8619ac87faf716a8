"""Operator Integration API wallet operations: each callback decided by one Lua script.

Records are scoped by operator ('oia:<operator>') and player; a transaction id
reused by the platform for another player is therefore a separate transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec

from app.keys import META_FILTER_LAYOUT, META_FILTER_SINCE
from app.ledger import LedgerStore, StoredEntry, StoreUnavailable, open_store
from app.ledger.guard import stored_seqs
from app.protocols.oia.late_retry import Horizon, word_and_mask
from app.redis_client import optional_text
from app.sessions import new_token, token_partition
from app.settings import OiaSettings
from app.wallet import Wallet

T = TypeVar("T")

log = logging.getLogger("walletd.oia")

# The ledger's source of OIA entries (and of their keys, with the operator id).
LEDGER_SOURCE = "oia"
# A changebalance waits on a lookup: a store that has not answered by then (hung, or the
# one connection busy with such a call) refuses the call (OP_50, nothing booked) instead.
LOOKUP_TIMEOUT_S = 3.0
# Ledger entry kinds of a changebalance, to the spec's transaction_type.
BOOKED_KINDS = {"bet": "BET", "win": "WIN", "refund": "REFUND"}
# Journal kinds an OIA id's decisions leave in the store (app/ledger JOURNAL_KINDS).
REFUSAL, TOMBSTONE = "refusal", "tombstone"
# A fresh random token colliding even once is all but impossible; four tries bound the loop.
NEW_TOKEN_ATTEMPTS_MAX = 4


class Change(msgspec.Struct):
    """One changebalance, already validated and converted to minor units."""

    operator_id: str
    player_id: str
    kind: str  # BET, WIN, REFUND
    transaction_id: int
    round_id: int
    game_id: int
    currency: str
    amount_minor: int
    token: str | None
    round_finished: bool | None
    currency_allowed: bool
    game_disabled: bool
    deadline_ms: int
    transaction_timestamp: str | None = None  # UTC "Y-m-d H:i:s", as the platform sent it

    def fingerprint(self) -> str:
        # Important Note 4: same id + same data is a retry; anything else is OP_40.
        return "|".join((self.kind, self.player_id, str(self.amount_minor), self.currency,
                         str(self.round_id), str(self.game_id)))


class Outcome(msgspec.Struct):
    code: str  # OK or OP_xx, or LATE/BACKLOG/OVERFLOW/MISSING/... per script header
    balance_minor: int = 0
    currency: str = ""


class Authenticated(msgspec.Struct):
    code: str
    player_id: str = ""
    balance_minor: int = 0
    currency: str = ""
    name: str = ""
    country: str = ""


def flag(value: bool | None) -> str:
    return "" if value is None else ("1" if value else "0")


class StoreReader:
    """Read-only lookups in the ledger store for records that left Redis; opened
    on first use, one at a time off the event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store: LedgerStore | None = None
        self.lock = threading.Lock()
        self.errors = 0  # lookups that failed (app/metrics.py)

    def _opened(self) -> LedgerStore:
        """The store, opened on first use (the caller holds the lock)."""
        if self.store is None:
            self.store = open_store(self.url, call_timeout_s=LOOKUP_TIMEOUT_S)
        return self.store

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The one connection, or StoreUnavailable once another call held it for
        LOOKUP_TIMEOUT_S (a hung store: waiting longer would queue every lookup behind it)."""
        if not self.lock.acquire(timeout=LOOKUP_TIMEOUT_S):
            raise StoreUnavailable(f"ledger store busy: no lookup answered within {LOOKUP_TIMEOUT_S:g} s")
        try:
            yield
        finally:
            self.lock.release()

    def _find(self, player_id: str, ref: str) -> list[StoredEntry]:
        with self._locked():
            return self._opened().find(player_id, LEDGER_SOURCE, ref)

    async def in_thread(self, call: Callable[..., T], *args: Any) -> T:
        """call(*args) off the event loop; a failure is counted (self.errors) and raised."""
        try:
            return await asyncio.to_thread(call, *args)
        except Exception:
            self.errors += 1
            raise

    async def find(self, player_id: str, ref: str) -> list[StoredEntry]:
        return await self.in_thread(self._find, player_id, ref)

    def _holds_entries(self) -> bool:
        with self._locked():
            return self._opened().holds_entries(LEDGER_SOURCE)

    async def holds_entries(self) -> bool:
        return await self.in_thread(self._holds_entries)

    def seq_maxes(self, partitions: int) -> list[int]:
        """The highest stored seq per partition (the cold-start guard's, from a thread)."""
        with self.lock:
            return stored_seqs(self._opened(), partitions)

    def close(self) -> None:
        with self.lock:
            if self.store is not None:
                self.store.close()
                self.store = None


class OiaWallet:
    """The OIA calls on the shared Wallet: its Redis client, keys and scripts are the
    Wallet's (never copied here, so a runtime that swaps or closes them is seen)."""

    def __init__(self, wallet: Wallet, settings: OiaSettings, store: StoreReader) -> None:
        self.wallet = wallet
        self.retention_ms = settings.retention_s * 1000
        self.idle_ms = settings.session_idle_s * 1000
        self.store = store  # the runtime's: it closes it
        # Accounts without an owner (made before ownership) belong to the only
        # operator; with several, to nobody: refused to all (README "Operator ownership").
        self.implied_owner = settings.operators[0].id if len(settings.operators) == 1 else ""
        self.horizon = Horizon(settings.filter_generation_s)
        self.filter_bits = settings.filter_bits

    def owner_of(self, profile: dict[str, str]) -> str:
        """The operator an account belongs to, as lua/lib/owner.lua decides ('' = nobody)."""
        return profile.get("op") or self.implied_owner

    async def start(self) -> None:
        """Learn since when every booking is in the late-retry filter (README "Late retries")."""
        meta = self.wallet.keys.meta()
        layout = f"{self.horizon.generation_s}:{self.filter_bits}"
        stored_since, stored_layout = await self.wallet.redis.hmget(meta, [META_FILTER_SINCE, META_FILTER_LAYOUT])
        if (stored_since is None or stored_layout not in (None, layout)
                or (stored_since == "0" and stored_layout is None and await self.store_holds_entries())):
            # A walletd without the filter booked here, or the layout changed, or this
            # Redis is new but the ledger store is not (Redis's data was lost): those
            # bookings left no bits that can be read now.
            since = int(time.time())
            await self.wallet.redis.hset(meta, mapping={META_FILTER_SINCE: since, META_FILTER_LAYOUT: layout})
        else:
            since = int(stored_since)
            if stored_layout is None:
                await self.wallet.redis.hset(meta, META_FILTER_LAYOUT, layout)
        self.horizon.start(since)

    async def store_holds_entries(self) -> bool:
        """Whether the ledger store holds OIA bookings; asked once per Redis, at the first
        start on it. A store that cannot be read then counts as holding some: fresh ids
        pay the slow path for CLOCK_SKEW_S (README "Late retries")."""
        try:
            return await self.store.holds_entries()
        except (StoreUnavailable, OSError) as exc:
            log.error("ledger store unreadable at start, new bookings' ids are checked in it for a while: %s", exc)
            return True

    def tx_key(self, partition: int, operator_id: str, player_id: str, transaction_id: int) -> str:
        return self.wallet.keys.tx(partition, f"{LEDGER_SOURCE}:{operator_id}", player_id, str(transaction_id))

    def round_key(self, partition: int, operator_id: str, player_id: str, round_id: int) -> str:
        return self.wallet.keys.round(partition, f"{LEDGER_SOURCE}:{operator_id}", player_id, str(round_id))

    def session_key(self, partition: int, token: str | None) -> str:
        """The session key to check; a token from another partition (so not this
        player's) or none at all names a key that never exists."""
        if token is None or token_partition(token, self.wallet.keys.partitions) != partition:
            token = ""
        return self.wallet.keys.session(partition, token)

    async def authenticate(self, operator_id: str, token: str) -> Authenticated:
        partition = token_partition(token, self.wallet.keys.partitions)
        if partition is None:
            return Authenticated("OP_21")
        session = self.wallet.keys.session(partition, token)
        # The session names the player; only then is the account key known.
        player_id = optional_text(await self.wallet.read("HGET", session, "player"))
        if player_id is None:
            return Authenticated("OP_21")
        keys = [self.wallet.keys.account_at(partition, player_id), session]
        args = [player_id, operator_id, self.idle_ms, self.implied_owner]
        reply = await self.wallet.scripts.oia_authenticate(keys=keys, args=args)
        return Authenticated(reply[0], player_id, int(reply[1]), reply[2], reply[3], reply[4])

    async def balance(self, operator_id: str, player_id: str, token: str, currency: str,
                      currency_allowed: bool) -> Outcome:
        partition = self.wallet.keys.partition(player_id)
        keys = [self.wallet.keys.account_at(partition, player_id), self.session_key(partition, token)]
        args = [player_id, operator_id, currency, flag(currency_allowed), self.idle_ms, self.implied_owner]
        reply = await self.wallet.scripts.oia_balance(keys=keys, args=args)
        return Outcome(reply[0], int(reply[1]), reply[2])

    async def change(self, c: Change) -> Outcome:
        """One script call; a second one, after a ledger store lookup, only for an id
        that may have been booked before its record expired (README "Late retries")."""
        keys, partition = self.wallet.booking_keys(c.player_id)
        now_s = time.time()
        generation = self.horizon.generation(now_s)
        keys += [
            self.tx_key(partition, c.operator_id, c.player_id, c.transaction_id),
            self.session_key(partition, c.token),
            self.round_key(partition, c.operator_id, c.player_id, c.round_id),
            self.wallet.keys.seen(partition, generation),
            self.wallet.keys.seen(partition, generation - 1),
        ]
        ref = ledger_ref(c.operator_id, c.transaction_id)
        bits = word_and_mask(c.operator_id, c.player_id, c.transaction_id, self.filter_bits)
        args = [
            c.player_id, partition, c.kind, c.amount_minor, c.currency, c.fingerprint(), c.operator_id,
            c.game_id, flag(c.round_finished), flag(c.currency_allowed), flag(c.game_disabled),
            c.deadline_ms, self.wallet.settings.backlog_max, self.retention_ms, self.idle_ms, ref, c.round_id,
            self.implied_owner, self.horizon.expire_at_ms(generation),
        ]
        mode = "new" if self.horizon.young(c.transaction_timestamp, now_s) else "old"
        reply = await self.wallet.scripts.oia_change(keys=keys, args=[*args, mode, *bits])
        if reply[0] != "CHECK":
            return Outcome(reply[0], int(reply[1]), reply[2])
        store_may_be_behind = int(reply[1]) == 1
        try:
            found = record_from(await self.store.find(c.player_id, ref))
        except (StoreUnavailable, OSError) as exc:
            log.error("ledger store unreadable, changebalance refused unbooked: %s", exc)
            return Outcome("STORE_DOWN")
        if store_may_be_behind and not final(found):
            return Outcome("BEHIND")
        answer = ["absent"] if found is None else ["found"]
        stored = [] if found is None else found.args()
        reply = await self.wallet.scripts.oia_change(keys=keys, args=[*args, *answer, *bits, *stored])
        assert reply[0] != "CHECK", "the script asked the store twice"
        return Outcome(reply[0], int(reply[1]), reply[2])

    async def cancel(self, operator_id: str, player_id: str, transaction_id: int, round_id: int,
                     game_id: int, round_finished: bool | None, deadline_ms: int) -> str:
        """CANCELED, NOT_FOUND, NO_PLAYER, OP_34, LATE, BACKLOG, OVERFLOW or BEHIND."""
        keys, partition = self.wallet.booking_keys(player_id)
        ref = ledger_ref(operator_id, transaction_id)
        generation = self.horizon.generation(time.time())
        keys += [
            self.tx_key(partition, operator_id, player_id, transaction_id),
            self.round_key(partition, operator_id, player_id, round_id),
            self.wallet.keys.seen(partition, generation),  # a tombstone sets the id's bits
        ]
        word, mask = word_and_mask(operator_id, player_id, transaction_id, self.filter_bits)
        args = [player_id, partition, game_id, flag(round_finished), deadline_ms, self.wallet.settings.backlog_max,
                self.retention_ms, ref, round_id, operator_id, self.implied_owner, word, mask,
                self.horizon.expire_at_ms(generation)]
        reply = await self.wallet.scripts.oia_cancel(keys=keys, args=[*args, "check"])
        if reply[0] != "MISSING":
            return reply[0]
        # Not in Redis: past the retention (look in the ledger store) or never seen.
        store_may_be_behind = int(reply[1]) == 1
        found = record_from(await self.store.find(player_id, ref))
        if store_may_be_behind and not final(found):
            return "BEHIND"
        mode = ["tombstone"] if found is None else ["restore", *found.args()]
        reply = await self.wallet.scripts.oia_cancel(keys=keys, args=[*args, *mode])
        return reply[0]

    async def status(self, operator_id: str, player_id: str, transaction_id: int) -> str:
        """OK, ERROR, CANCELED, NOT_FOUND, NO_PLAYER, OP_34 or BEHIND."""
        partition = self.wallet.keys.partition(player_id)
        keys = [self.wallet.keys.account_at(partition, player_id),
                self.tx_key(partition, operator_id, player_id, transaction_id), self.wallet.keys.ledger(partition)]
        args = [operator_id, self.implied_owner, self.retention_ms]
        reply = await self.wallet.scripts.oia_status(keys=keys, args=args)
        state = reply[0]
        if state == "TOMB":
            return "NOT_FOUND"
        if state != "MISSING":
            return state
        found = record_from(await self.store.find(player_id, ledger_ref(operator_id, transaction_id)))
        if int(reply[1]) == 1 and not final(found):
            # "not found" or "booked" from a store that may lack the booking or its
            # cancel: the platform would settle (or not cancel) on a wrong answer.
            return "BEHIND"
        if found is None or found.state == "TOMB":
            return "NOT_FOUND"
        return found.state

    async def finish_round(self, operator_id: str, player_id: str, round_id: int) -> str:
        """OK, NOT_FOUND, NO_PLAYER, OP_34 or BACKLOG."""
        keys, partition = self.wallet.booking_keys(player_id)
        keys.insert(1, self.round_key(partition, operator_id, player_id, round_id))
        args = [self.retention_ms, operator_id, self.implied_owner, player_id, partition,
                self.wallet.settings.backlog_max, round_id]
        return (await self.wallet.scripts.oia_finish(keys=keys, args=args))[0]

    async def open_session(self, operator_id: str, player_id: str, game_id: str, lobby_id: str) -> tuple[str, str, str]:
        """A new live session: (token, currency, language). NO_PLAYER raises KeyError,
        a player of another operator (or an ownerless one nobody owns) PermissionError."""
        assert bool(game_id) != bool(lobby_id), "a session is for a game or for a lobby"
        partition = self.wallet.keys.partition(player_id)
        for _ in range(NEW_TOKEN_ATTEMPTS_MAX):
            token = new_token(partition)
            keys = [self.wallet.keys.account_at(partition, player_id), self.wallet.keys.session(partition, token)]
            reply = await self.wallet.scripts.oia_session(keys=keys, args=[player_id, operator_id, game_id,
                                                                     lobby_id, self.idle_ms, self.implied_owner])
            if reply[0] == "NO_PLAYER":
                raise KeyError(player_id)
            if reply[0] == "FOREIGN":
                raise PermissionError(player_id)
            if reply[0] == "OK":
                return token, reply[1], reply[2]
        raise RuntimeError("could not draw an unused session token")


def ledger_ref(operator_id: str, transaction_id: int) -> str:
    return f"{operator_id}|{transaction_id}"


class StoredRecord(msgspec.Struct, frozen=True):
    """What the ledger store holds for one OIA id whose record left Redis: the record
    oia_change.lua and oia_cancel.lua restore from it (their 'found' and 'restore' modes)."""

    state: str  # OK (booked), CANCELED, ERROR (a recorded refusal), TOMB (a cancel's tombstone)
    kind: str = ""  # BET, WIN, REFUND ('' for a refusal or tombstone)
    amount_minor: int = 0
    balance_after_minor: int = 0  # the original answer's balance
    fp: str = ""  # '' if stored before fingerprints were kept (or a tombstone)
    code: str = "OK"  # a refusal's OP_xx

    def args(self) -> list[str]:
        """ARGV[23..28] of oia_change.lua's 'found' mode, ARGV[16..21] of oia_cancel.lua's 'restore'."""
        return [self.state, self.kind, str(self.amount_minor), str(self.balance_after_minor), self.fp, self.code]


def final(found: StoredRecord | None) -> bool:
    """Whether a store that may be behind can still be trusted for this id. It may
    lack the booking (a tombstone or a booking now would deny or repeat it), the cancel
    of a booking or refusal it holds (restoring it uncancelled would let it be cancelled
    twice), or the refusal after a tombstone it holds (a second refusal entry); only a
    cancel found there is the id's last word."""
    return found is not None and found.state == "CANCELED"


def record_from(entries: list[StoredEntry]) -> StoredRecord | None:
    """The record a ref's stored entries (oldest first) leave, as the scripts wrote it live:
    a booking (cancelled or not), else a recorded refusal (cancelled or not: a tombstone's
    later OP_49 is one), else a tombstone; None if the store holds no decision for it."""
    cancelled = any(e.kind == "cancel" for e in entries)
    state = "CANCELED" if cancelled else ""
    booked = [e for e in entries if e.kind in BOOKED_KINDS]
    if booked:
        first = booked[0]
        return StoredRecord(state or "OK", BOOKED_KINDS[first.kind], abs(first.amount_minor),
                            first.balance_after_minor, first.fp)
    refusals = [e for e in entries if e.kind == REFUSAL]
    if refusals:
        first = refusals[0]
        return StoredRecord(state or "ERROR", balance_after_minor=first.balance_after_minor, fp=first.fp,
                            code=first.code)
    if any(e.kind == TOMBSTONE for e in entries):
        return StoredRecord("TOMB")
    return None
