"""Wallet operations: each is one Lua script call on the player's partition."""

from __future__ import annotations

import math
import time

import msgspec
from redis.asyncio import Redis

from app import currency
from app.keys import Keys
from app.scripts import ScriptClient, Scripts
from app.settings import WalletSettings

ALIAS_CACHE_MAX = 100_000
# A uid with no alias is re-checked this often, so a new alias is seen soon.
ALIAS_MISS_TTL_S = 2.0
PLAYER_ID_MAX_LEN = 64
TEXT_MAX_LEN = 100


class Account(msgspec.Struct):
    player_id: str
    balance_minor: int
    currency: str
    language: str


class Booking(msgspec.Struct):
    code: str  # OK, CURRENCY, FUNDS, BLOCKED, LATE, OVERFLOW, BACKLOG, NO_PLAYER
    account: Account | None


class Adjustment(msgspec.Struct):
    code: str  # OK, REPEAT, REF_CONFLICT, FUNDS, OVERFLOW, BACKLOG, NO_PLAYER
    balance_minor: int
    entry_id: str


class WalletError(ValueError):
    pass


class WalletConflict(WalletError):
    """The player or alias exists already."""


def check_text(value: str, field: str, max_len: int = TEXT_MAX_LEN, required: bool = True) -> str:
    if required and not value:
        raise WalletError(f"{field} is required")
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise WalletError(f"{field} must be at most {max_len} printable characters")
    return value


def check_player_id(player_id: str) -> str:
    check_text(player_id, "player id", PLAYER_ID_MAX_LEN)
    if any(c.isspace() for c in player_id) or "|" in player_id:
        raise WalletError("player id must not contain spaces or '|'")
    return player_id


class AliasCache:
    """alias key -> (player id, expiry). Claimed aliases never change, so a hit
    never expires; a miss (the uid is taken as the player id) expires soon."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, float]] = {}

    def get(self, alias: str) -> str | None:
        entry = self.entries.get(alias)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, alias: str, player_id: str, found: bool) -> None:
        if len(self.entries) >= ALIAS_CACHE_MAX:
            self.entries.clear()
        expires = math.inf if found else time.monotonic() + ALIAS_MISS_TTL_S
        self.entries[alias] = (player_id, expires)


class Wallet:
    def __init__(self, redis: Redis, settings: WalletSettings, script_client: ScriptClient | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.partitions)
        self.scripts = Scripts(script_client or redis)
        self.aliases = AliasCache()

    async def start(self) -> None:
        await self.check_partitions()
        await self.scripts.load(self.redis)

    async def check_partitions(self) -> None:
        meta = self.keys.meta()
        await self.redis.hsetnx(meta, "partitions", self.settings.partitions)
        stored = int(await self.redis.hget(meta, "partitions"))
        if stored != self.settings.partitions:
            raise WalletError(
                f"Redis holds data for {stored} partitions but wallet.partitions is "
                f"{self.settings.partitions}; partitions cannot change in place"
            )

    def _book_keys(self, player_id: str) -> tuple[list[str], int]:
        partition = self.keys.partition(player_id)
        keys = [self.keys.account_at(partition, player_id), self.keys.seq(partition), self.keys.ledger(partition)]
        return keys, partition

    async def resolve(self, kind: str, external_id: str) -> str:
        """The player an external id stands for: its alias, else the id itself."""
        alias = Keys.alias(kind, external_id)
        cached = self.aliases.get(alias)
        if cached is not None:
            return cached
        player_id = await self.redis.get(alias)
        self.aliases.put(alias, player_id or external_id, found=player_id is not None)
        return player_id or external_id

    async def account(self, player_id: str) -> Account | None:
        reply = await self.scripts.balance(keys=[self.keys.account(player_id)])
        if not reply:
            return None
        return Account(player_id, int(reply[0]), reply[1], reply[2])

    async def stargame_book(
        self, player_id: str, bet_minor: int, win_minor: int, deadline_ms: int, ref: str,
        currency_code: str = "",
    ) -> Booking:
        """currency_code: the currency the amounts were converted for; the script
        refuses (CURRENCY) if the account's differs. '' books minor units as given."""
        keys, partition = self._book_keys(player_id)
        args = [player_id, partition, bet_minor, win_minor, deadline_ms, self.settings.backlog_max, ref,
                currency_code]
        reply = await self.scripts.stargame_book(keys=keys, args=args)
        if reply[0] == "NO_PLAYER":
            return Booking("NO_PLAYER", None)
        return Booking(reply[0], Account(player_id, int(reply[1]), reply[2], reply[3]))

    async def adjust(self, player_id: str, kind: str, amount_minor: int, ref: str) -> Adjustment:
        assert kind in ("deposit", "withdraw")
        check_text(ref, "--ref")
        if amount_minor <= 0:
            raise WalletError("amount must be positive")
        keys, partition = self._book_keys(player_id)
        keys.append(self.keys.tx(partition, "admin", player_id, ref))
        args = [player_id, partition, kind, amount_minor, ref, self.settings.backlog_max]
        reply = await self.scripts.admin_adjust(keys=keys, args=args)
        return Adjustment(reply[0], int(reply[1]), reply[2])

    async def create_player(
        self, player_id: str, currency_code: str, balance_minor: int,
        country: str, language: str, name: str, aliases: list[str], *, operator_id: str,
    ) -> str:
        """Claims the aliases, then creates the account owned by operator_id ('' = no
        owner, only when no operator is configured); returns the opening entry id."""
        check_player_id(player_id)
        currency.lookup(currency_code)
        for value, field in ((country, "--country"), (language, "--language"), (name, "--name")):
            check_text(value, field, required=False)
        claimed = await self._claim_aliases(player_id, aliases)
        keys, partition = self._book_keys(player_id)
        args = [player_id, partition, currency_code, balance_minor, country, language, name, " ".join(aliases),
                operator_id]
        reply = await self.scripts.create_player(keys=keys, args=args)
        if reply[0] == "EXISTS":
            await self._release_aliases(player_id, claimed)
            raise WalletConflict(f"player {player_id} already exists")
        return reply[1]

    async def _claim_aliases(self, player_id: str, aliases: list[str]) -> list[str]:
        for alias in aliases:
            kind, _, external_id = alias.partition(":")
            if not kind or not external_id or " " in alias:
                raise WalletError(f"alias {alias!r} must look like stargame:117")
        claimed: list[str] = []
        for alias in aliases:
            key = Keys.alias(*alias.split(":", 1))
            if not await self.redis.set(key, player_id, nx=True):
                await self._release_aliases(player_id, claimed)
                raise WalletConflict(f"alias {alias} already belongs to {await self.redis.get(key)}")
            claimed.append(key)
        return claimed

    async def _release_aliases(self, player_id: str, keys: list[str]) -> None:
        for key in keys:
            if await self.redis.get(key) == player_id:
                await self.redis.delete(key)

    async def set_blocked(self, player_id: str, blocked: bool) -> None:
        reply = await self.scripts.set_blocked(keys=[self.keys.account(player_id)], args=["1" if blocked else "0"])
        if reply[0] == "NO_PLAYER":
            raise WalletError(f"unknown player {player_id}")

    async def profile(self, player_id: str) -> dict[str, str] | None:
        fields = await self.redis.hgetall(self.keys.account(player_id))
        return fields or None
