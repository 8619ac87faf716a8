"""Several `walletd serve` instances sharing one Redis and one ledger store: the load
through all of them, what their answers promised, and the store's ledger checked
against Redis's counters (every entry exactly once)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis

from app.keys import Keys
from app.ledger.consumers import consumer_name
from app.ledger.flusher import GROUP
from app.settings import Settings
from tests.oia_calls import call, change, new_session
from tests.process import Server, walletd

# Players: StarGame ones (bets of 1 minor unit) and OIA ones (BETs of 1.00), each with
# enough for any load here, so every booking leaves a balance no other left.
SG_PLAYERS = 6
OIA_PLAYERS = 4
OPENING = "100000.00"
# Concurrent callers; each sends one call at a time to the instance whose turn it is.
CALLERS = 16
WAIT_S = 60.0
TRANSACTION_IDS = itertools.count(1)


def flush_children(parent: int) -> list[int]:
    """Pids of the `walletd flush` processes whose parent is parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"app.cli" in cmdline and b"flush" in cmdline:
            found.append(int(entry.name))
    return found


def flush_child_cmdline(server: Server) -> list[str]:
    assert server.process is not None
    assert wait_for(lambda: len(flush_children(server.process.pid)) == 1, WAIT_S)  # type: ignore[union-attr]
    [pid] = flush_children(server.process.pid)
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def consumer_of(server: Server) -> str:
    """The default consumer name of the instance (its data_dir: tests/process.py)."""
    return consumer_name(Settings(data_dir=str(server.config.parent / "var")))


@dataclass
class Promised:
    """Per player, the balance each success answer reported (minor units)."""

    balances: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    per_instance: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total(self) -> int:
        return sum(len(v) for v in self.balances.values())


def create_players(server: Server) -> None:
    for player in [*sg_players(), *oia_players()]:
        walletd(server.config, "player", "create", player, "--currency", "EUR", "--balance", OPENING)


def sg_players() -> list[str]:
    return [f"sg{i}" for i in range(SG_PLAYERS)]


def oia_players() -> list[str]:
    return [f"oia{i}" for i in range(OIA_PLAYERS)]


async def sessions(client: httpx.AsyncClient) -> dict[str, str]:
    return {player: await new_session(client, player) for player in oia_players()}


async def caller(clients: list[httpx.AsyncClient], tokens: dict[str, str], promised: Promised,
                 stop: asyncio.Event) -> None:
    """StarGame writeBets and OIA BETs by turns, each to the next instance; a call that
    gets no answer (its instance killed) promised nothing."""
    rng = random.Random()
    for turn in itertools.count():
        if stop.is_set():
            return
        client = clients[turn % len(clients)]
        try:
            if rng.random() < 0.5:
                player = rng.choice(sg_players())
                params = {"cmd": "writeBet", "uid": player, "bet": "1", "win": "0"}
                body = (await client.get("/stargame", params=params)).json()
                if body["status"] == "success":
                    promised.balances[player].append(body["cash"])
                    promised.per_instance[str(client.base_url)] += 1
            else:
                player = rng.choice(oia_players())
                tx = next(TRANSACTION_IDS)
                answer = await call(client, "changebalance", change(player, tx, "BET", 1, token=tokens[player],
                                                                    round_id=tx))
                if answer["status"] == "OK":
                    promised.balances[player].append(round(answer["data"]["balance"] * 100))
                    promised.per_instance[str(client.base_url)] += 1
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.05)  # that instance is gone: the others carry on


async def load(servers: list[Server], tokens: dict[str, str], seconds: float,
               during: Callable[[], object] | None = None) -> Promised:
    """CALLERS concurrent callers through every server for `seconds`; `during`, if
    given, is called (in a thread) halfway through, the load going on."""
    promised = Promised()
    stop = asyncio.Event()
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=10, limits=httpx.Limits(max_connections=CALLERS))
               for s in servers]
    try:
        callers = [asyncio.create_task(caller(clients, tokens, promised, stop)) for _ in range(CALLERS)]
        await asyncio.sleep(seconds / 2)
        if during is not None:
            await asyncio.to_thread(during)
        await asyncio.sleep(seconds / 2)
        stop.set()
        await asyncio.gather(*callers)
    finally:
        for client in clients:
            await client.aclose()
    return promised


def open_redis(redis_url: str, cluster: bool) -> redis.Redis | redis.RedisCluster:
    """redis-py for the test's own reads: its cluster client on a Redis Cluster."""
    if cluster:
        return redis.RedisCluster.from_url(redis_url, decode_responses=True)
    return redis.Redis.from_url(redis_url, decode_responses=True)


def seq_counters(redis_url: str, partitions: int, cluster: bool = False) -> dict[int, int]:
    keys = Keys(partitions)
    with open_redis(redis_url, cluster) as client:
        return {p: int(client.get(keys.seq(p)) or 0) for p in range(partitions)}


def consumers(redis_url: str, partitions: int, cluster: bool = False) -> dict[str, int]:
    """Consumer name -> entries pending to it, over every partition's group."""
    keys = Keys(partitions)
    found: dict[str, int] = defaultdict(int)
    with open_redis(redis_url, cluster) as client:
        for partition in range(partitions):
            if client.exists(keys.ledger(partition)):
                for consumer in client.xinfo_consumers(keys.ledger(partition), GROUP):
                    found[consumer["name"]] += consumer["pending"]
    return dict(found)


def stored_rows(storage_url: str) -> list[tuple[int, int, str, str, int, int]]:
    """(partition, seq, player, kind, amount, balance after) of every stored entry."""
    with psycopg.connect(storage_url) as db:
        return db.execute("SELECT partition, seq, player_id, kind, amount_minor, balance_after_minor "
                          "FROM ledger ORDER BY partition, seq").fetchall()


def all_stored(redis_url: str, storage_url: str, partitions: int, cluster: bool = False) -> bool:
    return len(stored_rows(storage_url)) == sum(seq_counters(redis_url, partitions, cluster).values())


def assert_exactly_once(redis_url: str, storage_url: str, partitions: int, cluster: bool = False) -> None:
    """Each entry Redis counted is in the store once: per partition seqs 1..counter."""
    rows = stored_rows(storage_url)
    for partition, counter in seq_counters(redis_url, partitions, cluster).items():
        assert [seq for p, seq, *_ in rows if p == partition] == list(range(1, counter + 1)), partition


def assert_promises_kept(promised: Promised, storage_url: str, balances: dict[str, int]) -> None:
    """Every success answer's booking is stored (its balance after is unique: bets of one
    amount never refused), and each balance is what the ledger sums to."""
    rows = stored_rows(storage_url)
    for player, reported in promised.balances.items():
        bets = [after for _, _, who, kind, _, after in rows if who == player and kind == "bet"]
        assert len(bets) == len(set(bets)), f"{player}: a booking stored twice"
        assert set(reported) <= set(bets), f"{player}: an answered booking is missing"
        assert balances[player] == sum(amount for _, _, who, _, amount, _ in rows if who == player)


async def balances_now(client: httpx.AsyncClient) -> dict[str, int]:
    found = {}
    for player in [*sg_players(), *oia_players()]:
        body = (await client.get("/stargame", params={"cmd": "getBalance", "uid": player})).json()
        found[player] = body["cash"]
    return found
