"""The flusher's drain rate into each ledger store (issue 11's target: at least 3x
walletd's single-worker booking saturation, into PostgreSQL with synchronous_commit on).

Method: a backlog of ENTRIES ledger entries is written straight into the partition
streams, XADD in the format lua/lib/ledger.lua writes (each partition's players'
'open' entries, then OIA BETs with every field a booking carries), into a Redis
database of its own (DRAIN_DB of the bench's redis-server: the same server, AOF and
core as walletd's bookings, apart from walletd's data) with no flusher running. Then
`walletd flush` starts on an empty store, pinned like walletd, with walletd's default
[flusher] settings, and the runner samples the streams' total length every
SAMPLE_EVERY_S until it is 0. The rate counts from the first sample below the backlog
to the first at 0, so the process's start-up is not in it. At the end the store must
hold exactly the backlog (its partition counts and highest sequences), else the run fails.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import redis
from redis.cluster import RedisCluster

from app import spawn
from app.keys import Keys, partition_of
from app.ledger import open_store
from app.settings import WalletSettings
from bench import fixtures
from bench.servers import Process, pinned

POSTGRES_ENV = "WALLETD_BENCH_POSTGRES_URL"  # the server to measure; else a private pgserver (bench/postgres.py)
DRAIN_DB = 1  # walletd's bench data is in db 0; the drain's backlog never meets it
ENTRIES = 100_000  # about 4 s of booking at saturation: seconds of draining at the target
SMOKE_ENTRIES = 5_000  # the CI guard's: a correctness check, not a rate
XADD_CHUNK = 2_000  # entries per pipelined round trip while filling
SAMPLE_EVERY_S = 0.02  # backlog samples: 1 % of a 2 s drain
DRAIN_TIMEOUT_S = 120.0  # 100,000 entries at under 1,000/s: broken, not slow
START_TIMEOUT_S = 60.0  # `walletd flush` imports, connects and takes its first batch well within this


class DrainFailed(Exception):
    """The flusher did not move the backlog into the store, or not exactly."""


class Drain(msgspec.Struct):
    store: str  # "SQLite", "PostgreSQL"
    entries: int
    seconds: float  # from the first entry gone until the streams were empty
    rate: float  # entries/s
    started_s: float  # from the process's start to the first entry gone
    settings: str  # what the store ran with (synchronous=FULL, synchronous_commit = on)
    command: str


def postgres_store() -> bool:
    """Whether this walletd has the PostgreSQL store (bench/postgres.py needs its driver)."""
    return importlib.util.find_spec("app.ledger.postgres") is not None


def player_ids(partitions: int) -> dict[int, list[str]]:
    """The bench's players by partition (every partition gets some: 1,004 players over 256, at least 2 each)."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for player in fixtures.player_ids():
        by_partition[partition_of(player, partitions)].append(player)
    assert all(by_partition.values()), "a partition without players"
    return by_partition


def stream_entries(partition: int, players: list[str], count: int) -> Iterator[dict[str, str]]:
    """A partition's entries as lua/lib/ledger.lua writes them: opens, then OIA BETs."""
    ts = int(time.time() * 1000)
    balance = dict.fromkeys(players, fixtures.BALANCE_MINOR)
    for seq in range(1, count + 1):
        player = players[(seq - 1) % len(players)]
        common = {"id": f"{partition}:{seq}", "player": player, "ts": str(ts + seq)}
        if seq <= len(players):
            yield {**common, "kind": "open", "amount": str(balance[player]), "balance": str(balance[player]),
                   "source": "admin", "ref": "", "cur": fixtures.CURRENCY, "country": "DE", "lang": "en",
                   "name": player, "aliases": "", "op": fixtures.OPERATOR}
            continue
        balance[player] -= 100
        yield {**common, "kind": "bet", "amount": "-100", "balance": str(balance[player]), "source": "oia",
               "ref": f"{fixtures.OPERATOR}|{partition}.{seq}", "op": fixtures.OPERATOR, "cur": fixtures.CURRENCY,
               "round": f"{partition}.{seq}", "game": str(fixtures.GAME_ID), "fin": "0",
               "fp": f"{seq:040x}"}


def fill(client: redis.Redis | RedisCluster, keys: Keys, entries: int,
         players: dict[int, list[str]] | None = None) -> dict[int, int]:
    """entries spread evenly over the partitions' streams (and their seq counters, as
    the scripts keep them), by players (default: the bench's); partition -> entries written."""
    players = players or player_ids(keys.partitions)
    counts = {p: entries // keys.partitions + (p < entries % keys.partitions) for p in range(keys.partitions)}
    pipe = client.pipeline(transaction=False)
    for partition, count in counts.items():
        for fields in stream_entries(partition, players[partition], count):
            pipe.xadd(keys.ledger(partition), fields)  # type: ignore[arg-type]
            if len(pipe) >= XADD_CHUNK:
                pipe.execute()
        pipe.set(keys.seq(partition), count)
    pipe.execute()
    return counts


def backlog(client: redis.Redis, keys: Keys) -> int:
    pipe = client.pipeline(transaction=False)
    for partition in range(keys.partitions):
        pipe.xlen(keys.ledger(partition))
    return sum(pipe.execute())


def flush_config(work: Path, redis_url: str, store_url: str, label: str) -> Path:
    config = work / f"drain-{label}.toml"
    config.write_text(f'data_dir = "{work / ("drain-" + label)}"\n[redis]\nurl = "{redis_url}"\n'
                      f'[storage]\nurl = "{store_url}"\n'
                      f'[[oia.operators]]\nid = "{fixtures.OPERATOR}"\nsecret_key = "{fixtures.SECRET}"\n')
    return config


def watch_drain(client: redis.Redis, keys: Keys, entries: int, process: Process) -> tuple[float, float, float]:
    """(seconds from start to the first entry gone, seconds from then to empty, entries
    counted in that span) from the streams' length."""
    began = time.monotonic()
    first_s = first_left = None
    while True:
        left = backlog(client, keys)
        now = time.monotonic()
        if first_s is None and left < entries:
            first_s, first_left = now, left
        if left == 0:
            break
        limit = START_TIMEOUT_S if first_s is None else DRAIN_TIMEOUT_S
        if now - (first_s or began) > limit or process.process.poll() is not None:
            raise DrainFailed(f"bench drain: {left:,} of {entries:,} entries still in the streams "
                               f"(walletd flush exit {process.process.poll()}):\n{process.log.read_text()[-3000:]}")
        time.sleep(SAMPLE_EVERY_S)
    assert first_s is not None and first_left is not None
    return first_s - began, max(now - first_s, SAMPLE_EVERY_S), first_left


def check_stored(store_url: str, counts: dict[int, int]) -> None:
    store = open_store(store_url)
    try:
        stats = store.partition_stats()
    finally:
        store.close()
    got = {p: (s.count, s.seq_max) for p, s in stats.items()}
    expected = {p: (n, n) for p, n in counts.items() if n}
    if got != expected:
        raise DrainFailed(f"bench drain: the store holds {got}, expected {expected}")


def measure(work: Path, redis_base_url: str, store_url: str, store: str, settings: str, entries: int,
            cpus: str | None) -> Drain:
    """One drain of entries into the (empty) store at store_url by `walletd flush`."""
    redis_url = f"{redis_base_url.rsplit('/', 1)[0]}/{DRAIN_DB}"
    keys = Keys(WalletSettings().partitions)  # the bench config keeps the default
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
        counts = fill(client, keys, entries)
        assert backlog(client, keys) == entries
        label = store.lower()
        command = spawn.command("app.cli", "--config", str(flush_config(work, redis_url, store_url, label)), "flush")
        process = Process(f"flush {label}", pinned(cpus, command), work / f"drain-{label}.log")
        try:
            started_s, seconds, drained = watch_drain(client, keys, entries, process)
        finally:
            process.stop()
        check_stored(store_url, counts)
        client.flushdb()
    finally:
        client.close()
    return Drain(store, entries, round(seconds, 2), round(drained / seconds), round(started_s, 2), settings,
                 "walletd flush ([flusher] defaults) on a backlog of XADDed entries")

