"""walletd verify: Redis balances against the ledger store, after a full drain.

On Redis Cluster (README "Scaling out") every read reaches every primary: the account
SCAN is redis-py's cluster scan, sent to each primary with a cursor of its own until
each is done (tests/test_cluster_tools.py finds an account missing on the third); the
seq counters and balances are read in pipelines that redis-py splits by node; the
drain is the flusher's, which reads each stream on its primary.
"""

from __future__ import annotations

import re

from app.keys import Keys
from app.ledger import LedgerConflict, LedgerStore, PartitionStats
from app.ledger.flusher import Flusher
from app.ledger.guard import behind_problems, stored_seqs, written_seqs
from app.ledger.transfer_check import transfer_problems
from app.redis_client import RedisClient

# Accounts read per SCAN step and per pipelined HGET round: bounded memory, few round trips.
SCAN_BATCH = 500
# A balance as the scripts store it: an integer; anything else is reported.
INTEGER = re.compile(r"-?[0-9]{1,20}")


async def redis_balances(redis: RedisClient, keys: Keys) -> tuple[dict[str, int], list[str]]:
    """Every account's balance, and a problem for each account whose balance is unreadable."""
    balances: dict[str, int] = {}
    problems: list[str] = []

    async def read(accounts: dict[str, str]) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for name in accounts:
                pipe.hget(name, "bal")
            values = await pipe.execute(raise_on_error=False)
        for (name, player), value in zip(accounts.items(), values, strict=True):
            if isinstance(value, str) and INTEGER.fullmatch(value):
                balances[player] = int(value)
            else:
                problems.append(f"player {player}: no balance in Redis ({name!r} holds {value!r:.80})")

    batch: dict[str, str] = {}
    async for name in redis.scan_iter(match=keys.all_accounts_pattern(), count=SCAN_BATCH):
        player = keys.player_of_account(name)
        if player is None:
            continue  # a transaction or round key whose ids contain ':acct:' (never an account)
        batch[name] = player
        if len(batch) >= SCAN_BATCH:
            await read(batch)
            batch = {}
    if batch:
        await read(batch)
    return balances, problems


async def redis_behind_store(redis: RedisClient, keys: Keys, store: LedgerStore) -> list[str]:
    """Partitions whose Redis has written fewer entries than the store holds: that
    Redis lost data (or is another one), and its next entry ids are already taken."""
    # The store first, as the cold-start guard reads them (app/ledger/guard.py).
    stored = stored_seqs(store, keys.partitions)
    return behind_problems(await written_seqs(redis, keys), stored)


async def check_sequences(redis: RedisClient, keys: Keys, stats: dict[int, PartitionStats]) -> list[str]:
    problems = []
    for partition, written in enumerate(await written_seqs(redis, keys)):
        stored = stats.get(partition, PartitionStats(0, 0))
        if stored.count != stored.seq_max:
            problems.append(f"partition {partition}: {stored.seq_max - stored.count} ledger entries "
                            f"missing below seq {stored.seq_max} in the ledger store")
        if stored.seq_max != written:
            problems.append(f"partition {partition}: Redis wrote {written} ledger entries, "
                            f"the ledger store has up to seq {stored.seq_max}")
    return problems


def compare_balances(balances: dict[str, int], sums: dict[str, int]) -> list[str]:
    problems = []
    for player, balance in sorted(balances.items()):
        expected = sums.get(player)
        if expected is None:
            problems.append(f"player {player}: balance {balance} in Redis, no ledger entries")
        elif expected != balance:
            problems.append(f"player {player}: balance {balance} in Redis, ledger says {expected} "
                            f"(differs by {balance - expected})")
    for player in sorted(set(sums) - set(balances)):
        problems.append(f"player {player}: in the ledger store (sum {sums[player]}) but not in Redis")
    return problems


async def verify(flusher: Flusher) -> list[str]:
    """Drains the streams into the flusher's store, then lists every difference found."""
    redis, store, keys = flusher.redis, flusher.store, flusher.keys
    behind = await redis_behind_store(redis, keys, store)
    if behind:  # draining would only meet ids the store holds with other content
        return [f"Redis is behind the ledger store: {problem}" for problem in behind]
    try:
        await flusher.drain()
    except LedgerConflict as exc:
        return [str(exc)]
    problems = await check_sequences(redis, keys, store.partition_stats())
    balances, unreadable = await redis_balances(redis, keys)
    problems += unreadable
    problems += compare_balances(balances, store.player_sums())
    problems += transfer_problems(store)
    return problems
