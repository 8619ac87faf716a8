"""The wallet every protocol shares: accounts, players, aliases, balances, admin
adjustments. Each protocol's own calls live in its package (app/protocols/*/wallet.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from app import currency
from app.errors import ConnectionFailed, OutcomeUnknown, WalletRefused, WalletUnavailable
from app.ids import PLAYER_ID_MAX_LEN, is_player_id
from app.keys import META_FILTER_SINCE, META_PARTITIONS, Keys
from app.redis_client import RedisClient, command_errors, optional_text, text, text_map
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.redis_pipe import PipelinedRedis
from app.scripts import ScriptClient, Scripts
from app.settings import WalletSettings

# Aliases cached per process; cleared when full, so memory stays bounded.
ALIAS_CACHE_MAX = 100_000
# A uid with no alias is re-checked this often, so a new alias is seen soon.
ALIAS_MISS_TTL_S = 2.0
# A cached alias is re-read this often, so a released alias stops routing money within
# this time; it costs one GET per active uid per period, not one per callback.
ALIAS_HIT_TTL_S = 10.0
# How long past its expiry a cached alias (or miss) still answers when Redis cannot be
# asked. On Redis Cluster an alias key has a slot of its own, often on another primary
# than its player's account: without this, that primary down refuses players whose
# accounts are served. Safe because an alias never changes once its player exists: it is
# claimed at creation and released only when that creation fails (no account to book on).
ALIAS_STALE_MAX_S = 3600.0
# Protocols whose external ids can stand for a player: a uid with no alias is taken as
# the player id itself, so each player id reserves its own name in every kind.
ALIAS_KINDS = ("stargame",)
# A claim whose holder vanished between SET NX and GET is tried again this many times.
CLAIM_ATTEMPTS_MAX = 3
PLAYER_ID_RULE = f"1-{PLAYER_ID_MAX_LEN} characters of A-Z a-z 0-9 _ . @ -"
TEXT_MAX_LEN = 100


class Account(msgspec.Struct):
    player_id: str
    balance_minor: int
    currency: str
    language: str


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
    if len(value) > max_len or any(c < " " for c in value):  # control characters
        raise WalletError(f"{field} must be at most {max_len} printable characters")
    return value


def check_player_id(player_id: str) -> str:
    """Player ids become part of key names (app/keys.py): never '{', '}', ':', '|' or spaces."""
    if not is_player_id(player_id):
        raise WalletError(f"player id {player_id!r:.80} must be {PLAYER_ID_RULE}")
    return player_id


def parse_alias(alias: str) -> tuple[str, str]:
    """'stargame:117' -> ('stargame', '117'); the id must be a possible player id."""
    kind, _, external_id = alias.partition(":")
    if kind not in ALIAS_KINDS or not is_player_id(external_id):
        raise WalletError(f"alias {alias!r:.80} must look like stargame:117 "
                          f"(kind {' or '.join(ALIAS_KINDS)}, then {PLAYER_ID_RULE})")
    return kind, external_id


class AliasCache:
    """alias key -> (player id, expiry). A hit expires after ALIAS_HIT_TTL_S (an alias
    may be released), a miss (the uid is taken as the player id) after ALIAS_MISS_TTL_S."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, float]] = {}

    def get(self, alias: str) -> str | None:
        entry = self.entries.get(alias)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def stale(self, alias: str) -> str | None:
        """The entry even if expired, up to ALIAS_STALE_MAX_S past its expiry."""
        entry = self.entries.get(alias)
        if entry is None or entry[1] + ALIAS_STALE_MAX_S < time.monotonic():
            return None
        return entry[0]

    def put(self, alias: str, player_id: str, found: bool) -> None:
        if len(self.entries) >= ALIAS_CACHE_MAX:
            self.entries.clear()
        expires = time.monotonic() + (ALIAS_HIT_TTL_S if found else ALIAS_MISS_TTL_S)
        self.entries[alias] = (player_id, expires)


def partitions_mismatch(stored: int | str, configured: int) -> str:
    """The refusal of a partition count other than the data's, naming the fix: a deployment
    made before the default became 256 (it was 16) and not setting it meets it first."""
    return (f"Redis holds data for {stored} partitions but wallet.partitions is {configured}; partitions "
            f"cannot change in place: set [wallet] partitions = {stored} in the config (the default was 16 "
            f"before walletd's cluster support, it is 256 now)")


class Wallet:
    def __init__(self, redis: RedisClient, settings: WalletSettings, script_client: ScriptClient | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.partitions)
        self.script_client = script_client or redis
        self.scripts = Scripts(self.script_client)
        self.aliases = AliasCache()

    async def start(self) -> None:
        await self.check_partitions()
        await self.scripts.load(self.redis)

    async def check_partitions(self, write: bool = True) -> None:
        """Refuses a partition count other than the one Redis's data was written with;
        records it first on a Redis that has none (write=False, while the cold-start
        guard refuses: app/ledger/guard.py, writes nothing)."""
        meta = self.keys.meta()
        if write and await self.redis.hsetnx(meta, META_PARTITIONS, self.settings.partitions):
            # A Redis that never held walletd data: no booking predates the late-retry filter.
            await self.redis.hsetnx(meta, META_FILTER_SINCE, 0)
        stored_text = await self.redis.hget(meta, META_PARTITIONS)
        if stored_text is None:
            assert not write, "set by HSETNX above"
            return
        stored = int(text(stored_text))
        if stored != self.settings.partitions:
            raise WalletError(partitions_mismatch(stored, self.settings.partitions))

    def booking_keys(self, player_id: str) -> tuple[list[str], int]:
        """KEYS[1..3] of every money-moving script (account, seq, ledger), and the partition."""
        partition = self.keys.partition(player_id)
        keys = [self.keys.account_at(partition, player_id), self.keys.seq(partition), self.keys.ledger(partition)]
        return keys, partition

    async def read(self, *command: str) -> Any:
        """A read on a callback's way, through the booking client when it is the pipelined
        one: its connect waits no longer than the callback's deadline (a Redis that is
        loading, or unreachable, would hold a redis-py read for its whole time-out), and an
        outage is logged once. With script_client = "redis-py", redis-py's."""
        client = self.script_client
        if isinstance(client, (PipelinedRedis, ClusterPipelinedRedis)):
            try:
                return await client.execute(*command)
            except ResponseError as exc:  # e.g. WRONGTYPE: the command ran and refused
                raise WalletRefused(str(exc)) from exc
        execute: Callable[..., Awaitable[Any]] = self.redis.execute_command  # redis-py leaves it untyped
        with command_errors():
            return await execute(*command)

    async def resolve(self, kind: str, external_id: str) -> str:
        """The player an external id stands for: its alias, else the id itself."""
        alias = Keys.alias(kind, external_id)
        cached = self.aliases.get(alias)
        if cached is not None:
            return cached
        try:
            player_id = optional_text(await self.read("GET", alias))
        except (WalletUnavailable, OutcomeUnknown, ConnectionFailed):
            stale = self.aliases.stale(alias)  # its node is down: the last answer (ALIAS_STALE_MAX_S)
            if stale is None:
                raise
            return stale
        self.aliases.put(alias, player_id or external_id, found=player_id is not None)
        return player_id or external_id

    async def account(self, player_id: str) -> Account | None:
        reply = await self.scripts.balance(keys=[self.keys.account(player_id)])
        if not reply:
            return None
        return Account(player_id, int(reply[0]), reply[1], reply[2])

    async def adjust(self, player_id: str, kind: str, amount_minor: int, ref: str) -> Adjustment:
        assert kind in ("deposit", "withdraw")
        check_text(ref, "--ref")
        if amount_minor <= 0:
            raise WalletError("amount must be positive")
        keys, partition = self.booking_keys(player_id)
        keys.append(self.keys.tx(partition, "admin", player_id, ref))
        args = [player_id, partition, kind, amount_minor, ref, self.settings.backlog_max]
        reply = await self.scripts.admin_adjust(keys=keys, args=args)
        return Adjustment(reply[0], int(reply[1]), reply[2])

    async def create_player(
        self, player_id: str, currency_code: str, balance_minor: int,
        country: str, language: str, name: str, aliases: list[str], *, operator_id: str,
    ) -> str:
        """Claims the aliases, then creates the account owned by operator_id ('' = no
        owner, only when no operator is configured); returns the opening entry id.

        No alias may shadow a player id and no player id an alias: each player id first
        claims its own name in every alias kind (SET NX on the alias key, so of two
        concurrent creates naming the same id only one gets it), then its aliases."""
        check_player_id(player_id)
        currency.lookup(currency_code)
        for value, field in ((country, "--country"), (language, "--language"), (name, "--name")):
            check_text(value, field, required=False)
        wanted = list(dict.fromkeys(parse_alias(alias) for alias in aliases))
        with command_errors():  # its callers are the admin API and the CLI
            claimed = await self._claim_names(player_id, wanted)
            keys, partition = self.booking_keys(player_id)
            args = [player_id, partition, currency_code, balance_minor, country, language, name,
                    " ".join(f"{kind}:{external_id}" for kind, external_id in wanted), operator_id]
            # No clean-up if this call fails: the account may exist (outcome unknown), and
            # names left claimed only point at this player id.
            reply = await self.scripts.create_player(keys=keys, args=args)
            if reply[0] == "EXISTS":
                # Keep what the existing account owns (its own names, and aliases a
                # concurrent create of the same id may have claimed for it).
                owned = text(await self.redis.hget(keys[0], "aliases") or "").split()
                kept = {Keys.alias(*alias.split(":", 1)) for alias in owned}
                kept.update(Keys.alias(kind, player_id) for kind in ALIAS_KINDS)
                await self._release(player_id, [key for key in claimed if key not in kept])
                raise WalletConflict(f"player {player_id} already exists")
            return reply[1]

    async def _claim_names(self, player_id: str, aliases: list[tuple[str, str]]) -> list[str]:
        """Claims the player id's own names, then its aliases; returns the keys claimed
        now (not those it held already). Refuses, releasing them, on any conflict."""
        claimed: list[str] = []
        try:
            for kind in ALIAS_KINDS:
                holder = await self._claim(Keys.alias(kind, player_id), player_id, claimed)
                if holder != player_id:
                    raise WalletConflict(f"player id {player_id} is taken: alias {kind}:{player_id} "
                                         f"belongs to player {holder}")
            for kind, external_id in aliases:
                if external_id == player_id:
                    continue  # its own name, claimed above
                key = Keys.alias(kind, external_id)
                holder = await self._claim(key, player_id, claimed)
                if holder != player_id:
                    raise WalletConflict(f"alias {kind}:{external_id} already belongs to player {holder}")
                if key in claimed and await self.redis.exists(self.keys.account(external_id)):
                    # a player made before names were claimed: the alias would shadow it
                    raise WalletConflict(f"alias {kind}:{external_id} would shadow player {external_id}")
        except WalletConflict:
            await self._release(player_id, claimed)
            raise
        return claimed

    async def _claim(self, key: str, player_id: str, claimed: list[str]) -> str:
        """The key's holder after trying to claim it for player_id (appended to claimed if now)."""
        for _ in range(CLAIM_ATTEMPTS_MAX):
            if await self.redis.set(key, player_id, nx=True):
                claimed.append(key)
                return player_id
            holder = optional_text(await self.redis.get(key))
            if holder is not None:
                return holder
        raise WalletConflict(f"alias {key} keeps changing; try again")

    async def _release(self, player_id: str, keys: list[str]) -> None:
        for key in keys:
            if await self.redis.get(key) == player_id:
                await self.redis.delete(key)

    async def set_blocked(self, player_id: str, blocked: bool) -> None:
        keys, partition = self.booking_keys(player_id)
        reply = await self.scripts.set_blocked(keys=keys, args=["1" if blocked else "0", player_id, partition])
        if reply[0] == "NO_PLAYER":
            raise WalletError(f"unknown player {player_id}")

    async def profile(self, player_id: str) -> dict[str, str] | None:
        with command_errors():
            fields = text_map(await self.redis.hgetall(self.keys.account(player_id)))
        return fields or None
