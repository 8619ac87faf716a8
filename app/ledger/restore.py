"""What the Lua scripts left in Redis, re-derived from one partition's ledger entries.

Fed the partition's entries in seq order (RECORD.md's contract), a Restore lists the
Redis writes that recreate, for that partition: accounts (profile, owner, blocked,
balance), alias keys, OIA transaction and round records and StarGame request records
younger than their retention (with the expiry they would have now), and admin
adjustment records. Every write is absolute (HSET, HSETNX, SET, PEXPIREAT, DEL), so
replaying the same entries over any earlier attempt gives the same keys.

Transfers (docs/transfers.md) are not restorable yet: a player's transfer legs count in
its balance like any money entry, but the transfer records they imply (without which a
retried credit could be booked twice) have no scripts yet, and neither have agents'
accounts; a partition holding either is reported as a problem, so the rebuild stays
marked and walletd keeps refusing instead of running on a Redis that lacks them.
app/ledger/rebuild.py reads the entries and sends the writes.
"""

from __future__ import annotations

from collections.abc import Callable

from app.keys import REQUEST_ID, Keys
from app.ledger import MONEY_KINDS, TRANSFER_SOURCE, LedgerEntry, LedgerStore, StoredEntry
from app.wallet import ALIAS_KINDS

# One Redis command: its name and arguments, as sent (redis-py execute_command).
Command = tuple[str, ...]
# OIA transaction records written in this run, kept so that a cancel finds its booking's
# fields without a store read; cleared when full, so memory stays bounded (a cancel of
# a record not held here asks the store, as oia_cancel.lua's 'restore' mode does).
RECENT_RECORDS_MAX = 100_000
# Ledger kinds of an OIA changebalance -> the record's 'type' (lua/lib/oia.lua).
BOOKED_TYPES = {"bet": "BET", "win": "WIN", "refund": "REFUND"}
# Refusals whose record holds balance 0 and no currency, whatever the entry's balance:
# OP_34 (no such player) and OP_49 (after a tombstone), as oia_change.lua records them.
BALANCELESS_CODES = ("OP_34", "OP_49")


class Restore:
    """One partition's entries -> Redis writes. Feed entries with apply(), take the
    writes made so far with take(), call finish() after the last entry."""

    def __init__(self, keys: Keys, store: LedgerStore, partition: int, now_ms: int,
                 oia_retention_ms: int, stargame_retention_ms: int) -> None:
        self.keys, self.store, self.partition, self.now_ms = keys, store, partition, now_ms
        self.oia_ms, self.stargame_ms = oia_retention_ms, stargame_retention_ms
        self.accounts: dict[str, dict[str, str]] = {}  # player -> the account hash's fields
        self.sums: dict[str, int] = {}  # player -> sum of money amounts (checks 'bal')
        self.touched: set[str] = set()  # accounts changed since the last take()
        self.commands: list[Command] = []
        self.recent: dict[str, dict[str, str]] = {}
        self.group: list[LedgerEntry] = []  # one StarGame writeBet's entries, not yet recorded
        self.problems: list[str] = []
        self.unrestorable: dict[str, int] = {}  # why -> how many entries (see the module docstring)
        self.handlers: dict[str, Callable[[LedgerEntry], None]] = {
            "admin": self.admin, "oia": self.oia, "stargame": self.stargame}

    def apply(self, entry: LedgerEntry) -> None:
        assert entry.partition == self.partition, entry.entry_id
        if self.group and not self.joins_group(entry):
            self.close_group()
        if entry.account_kind or entry.source == TRANSFER_SOURCE:
            self.not_restorable(entry)
            if entry.account_kind:
                return  # an agent's account is not a player's: no player account to move
        if entry.kind in MONEY_KINDS:
            self.money(entry)
        handler = self.handlers.get(entry.source)
        if handler is not None:
            handler(entry)

    def not_restorable(self, entry: LedgerEntry) -> None:
        why = "agents' accounts" if entry.account_kind else "transfer records"
        self.unrestorable[why] = self.unrestorable.get(why, 0) + 1

    def take(self) -> list[Command]:
        """The writes so far (accounts last: their final fields as of the last entry)."""
        for player in sorted(self.touched):
            fields = self.accounts[player]
            self.commands.append(("HSET", self.keys.account_at(self.partition, player), *flat(fields)))
        self.touched.clear()
        commands, self.commands = self.commands, []
        return commands

    def finish(self) -> list[Command]:
        """The last writes, and the balance check: each account's balance (the last money
        entry's balance_after) must be the sum of its money entries."""
        self.close_group()
        for why, count in sorted(self.unrestorable.items()):
            self.problems.append(f"partition {self.partition}: {count} ledger entries need {why}, which this "
                                 f"walletd cannot restore (docs/transfers.md): a newer walletd wrote them")
        for player, fields in sorted(self.accounts.items()):
            if int(fields["bal"]) != self.sums[player]:
                self.problems.append(f"player {player}: the ledger's last balance_after is {fields['bal']}, "
                                     f"its entries sum to {self.sums[player]}")
        return self.take()

    # Accounts and aliases ---------------------------------------------------------------

    def money(self, entry: LedgerEntry) -> None:
        player = entry.player_id
        if entry.kind == "open":
            if self.keys.partition(player) != self.partition:
                raise ValueError(f"entry {entry.entry_id}: player {player} is not in partition {self.partition} "
                                 f"with wallet.partitions = {self.keys.partitions}: the ledger store was "
                                 f"written with another partition count")
            self.accounts[player] = {"bal": "0", **(entry.profile or {})}
            self.sums[player] = 0
        elif player not in self.accounts:
            self.problems.append(f"entry {entry.entry_id}: a {entry.kind} for player {player}, "
                                 f"who has no 'open' entry before it")
            return
        self.sums[player] += entry.amount_minor
        self.accounts[player]["bal"] = str(entry.balance_after_minor)
        self.touched.add(player)

    def admin(self, entry: LedgerEntry) -> None:
        player = entry.player_id
        if entry.kind == "open":
            self.aliases(player, self.accounts[player].get("aliases", ""))
        elif entry.kind in ("deposit", "withdraw"):
            # lua/admin_adjust.lua's record: kept for good (no expiry), like the account.
            key = self.keys.tx(self.partition, "admin", player, entry.ref)
            fingerprint = f"{entry.kind}|{abs(entry.amount_minor)}"
            self.commands.append(("HSET", key, "fp", fingerprint, "bal", str(entry.balance_after_minor),
                                  "entry", entry.entry_id))
        elif entry.kind in ("block", "unblock") and player in self.accounts:
            self.accounts[player]["blocked"] = "1" if entry.kind == "block" else "0"
            self.touched.add(player)

    def aliases(self, player: str, aliases: str) -> None:
        """The names app/wallet.py claimed at creation: its own in every kind, then its aliases."""
        names = [(kind, player) for kind in ALIAS_KINDS]
        for alias in aliases.split():
            kind, _, external_id = alias.partition(":")
            names.append((kind, external_id))
        for kind, external_id in dict.fromkeys(names):
            self.commands.append(("SET", Keys.alias(kind, external_id), player))

    # OIA records (lua/lib/oia.lua) -----------------------------------------------------

    def oia(self, entry: LedgerEntry) -> None:
        if entry.ts_ms + self.oia_ms <= self.now_ms:
            return  # its record has expired: a retry finds the entry in the store
        operator, _, transaction_id = entry.ref.rpartition("|")
        source = f"oia:{operator}"
        expire_at = str(entry.ts_ms + self.oia_ms)
        if entry.kind == "finish":
            round_key = self.keys.round(self.partition, source, entry.player_id, entry.round_id)
            self.commands += [("HSET", round_key, "fin", "1"), ("PEXPIREAT", round_key, expire_at)]
            return
        key = self.keys.tx(self.partition, source, entry.player_id, transaction_id)
        fields = self.record_fields(key, entry)
        if fields is None:
            return
        if entry.kind == "tombstone":
            self.commands.append(("DEL", key))  # a tombstone is left where no record was
        self.commands += [("HSET", key, *flat(fields)), ("PEXPIREAT", key, expire_at)]
        self.remember(key, fields)
        if entry.kind != "tombstone":
            self.keep_round(self.keys.round(self.partition, source, entry.player_id, entry.round_id), entry, expire_at)

    def record_fields(self, key: str, entry: LedgerEntry) -> dict[str, str] | None:
        """The fields the entry's script wrote into the transaction record."""
        if entry.kind in BOOKED_TYPES:
            currency = entry.currency or self.account_currency(entry.player_id)
            return record("OK", entry.fp, "OK", entry.balance_after_minor, currency,
                          BOOKED_TYPES[entry.kind], abs(entry.amount_minor))
        if entry.kind == "refusal":
            return refusal(entry.fp, entry.code, entry.balance_after_minor, entry.currency)
        if entry.kind == "tombstone":
            return {"st": "TOMB"}
        if entry.kind == "cancel":
            return {**self.cancelled(key, entry), "st": "CANCELED"}
        return None  # no record (an OIA entry of a kind this version does not know)

    def cancelled(self, key: str, entry: LedgerEntry) -> dict[str, str]:
        """The record a cancel found: written in this run, or else (its booking older than
        the retention) rebuilt from the store, as oia_cancel.lua's 'restore' mode does."""
        held = self.recent.get(key)
        if held is not None:
            return held
        decision = decision_of(self.store.find(entry.player_id, "oia", entry.ref))
        if decision is None:
            return {}
        if decision.kind == "refusal":
            return refusal(decision.fp, decision.code, decision.balance_after_minor,
                           self.account_currency(entry.player_id))
        return record("OK", decision.fp, "OK", decision.balance_after_minor, self.account_currency(entry.player_id),
                      BOOKED_TYPES[decision.kind], abs(decision.amount_minor))

    def keep_round(self, round_key: str, entry: LedgerEntry, expire_at: str) -> None:
        """lua/lib/oia.lua keep_round: game when sent; fin 1 once finished, else 0 if unset."""
        if not entry.round_id:
            return
        if entry.game_id:
            self.commands.append(("HSET", round_key, "game", entry.game_id))
        if entry.round_finished == "1":
            self.commands.append(("HSET", round_key, "fin", "1"))
        else:
            self.commands.append(("HSETNX", round_key, "fin", "0"))
        self.commands.append(("PEXPIREAT", round_key, expire_at))

    def remember(self, key: str, fields: dict[str, str]) -> None:
        if len(self.recent) >= RECENT_RECORDS_MAX:
            self.recent.clear()
        self.recent[key] = {**self.recent.get(key, {}), **fields}

    def account_currency(self, player: str) -> str:
        return self.accounts.get(player, {}).get("cur", "")

    # StarGame request records (lua/stargame_book.lua, lua/stargame_reconcile.lua) ---------

    def joins_group(self, entry: LedgerEntry) -> bool:
        """A writeBet books its bet and win as consecutive entries with one ref."""
        last = self.group[-1]
        return (entry.source == "stargame" and entry.kind == "win" and last.kind == "bet"
                and entry.ref == last.ref and entry.player_id == last.player_id and entry.seq == last.seq + 1)

    def stargame(self, entry: LedgerEntry) -> None:
        if entry.kind in ("bet", "win"):
            self.group.append(entry)
            if entry.kind == "win":
                self.close_group()
        elif entry.kind == "reverse":
            request_id = self.request_of(entry.ref.split(",")[0])
            if request_id is not None:
                self.request_record(request_id, f"reversed|{entry.ref}|{entry.entry_id}", entry.ts_ms)
        elif entry.kind == "tombstone":
            self.request_record(entry.ref, "tombstone", entry.ts_ms)

    def close_group(self) -> None:
        if not self.group:
            return
        bet = sum(-e.amount_minor for e in self.group if e.kind == "bet")
        win = sum(e.amount_minor for e in self.group if e.kind == "win")
        ids = ",".join(e.entry_id for e in self.group)
        first = self.group[0]
        self.group = []
        self.request_record(first.ref, f"booked|{bet}|{win}|{ids}", first.ts_ms)

    def request_of(self, entry_id: str) -> str | None:
        """The request id (ref) of a booked entry, read from the store by its id."""
        partition, _, seq = entry_id.partition(":")
        if not (partition.isdigit() and seq.isdigit()):
            return None
        found = self.store.read(int(partition), int(seq) - 1, 1)
        return found[0].ref if found and found[0].entry_id == entry_id else None

    def request_record(self, request_id: str, value: str, ts_ms: int) -> None:
        expire_at = ts_ms + self.stargame_ms
        if expire_at <= self.now_ms or not REQUEST_ID.fullmatch(request_id):
            return  # expired (a retry is refused by its age), or not a request id walletd makes
        self.commands.append(("SET", self.keys.stargame_request(self.partition, request_id), value,
                              "PXAT", str(expire_at)))


def record(st: str, fp: str, code: str, balance: int, currency: str, kind: str, amount: int) -> dict[str, str]:
    """A transaction record as oia_change.lua's record() writes it."""
    return {"st": st, "fp": fp, "code": code, "bal": str(balance), "cur": currency, "type": kind, "amt": str(amount)}


def refusal(fp: str, code: str, balance: int, currency: str) -> dict[str, str]:
    """A refused request's record: its type and amount are the request's, from its
    fingerprint (type|user|amount_minor|currency|round|game, app/protocols/oia/wallet.py)."""
    kind, _, rest = fp.partition("|")
    amount = rest.split("|")[1] if rest.count("|") >= 1 else "0"
    if code in BALANCELESS_CODES:
        balance, currency = 0, ""
    return record("ERROR", fp, code, balance, currency, kind, int(amount) if amount.isdigit() else 0)


def decision_of(entries: list[StoredEntry]) -> StoredEntry | None:
    """The entry that decided a transaction id: its booking, else its last recorded refusal."""
    booked = [e for e in entries if e.kind in BOOKED_TYPES]
    if booked:
        return booked[0]
    refused = [e for e in entries if e.kind == "refusal"]
    return refused[-1] if refused else None


def flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
