"""walletd rebuild: Redis restored from the ledger store (README "Rebuild") recreates
what the Lua scripts wrote live, is idempotent and resumable, and refuses a Redis
ahead of the store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
import redis

from app import cli
from app.keys import META_FILTER_LAYOUT, META_FILTER_SINCE, META_REBUILD_RUNNING, Keys
from app.ledger import PROFILE_FIELDS, LedgerEntry, LedgerStore, open_store
from app.ledger.rebuild import RebuildRefused, rebuild
from app.settings import Settings
from app.wallet import Wallet
from tests.rebuild_calls import create_players, journal_workload, money_workload, same_state, snapshot
from tests.support import OPERATOR, drain, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[LedgerStore]:
    """The test's ledger store, each kind in turn (settings name it, so drain() and the CLI
    use it too); asked for before the wallet and client, which read settings when built."""
    if request.param == "postgresql":
        settings.storage.url = request.getfixturevalue("postgresql_url")
    opened = open_store(settings.storage_url)
    yield opened
    opened.close()


async def run(settings: Settings, store: LedgerStore) -> list[str]:
    """rebuild in process: its progress lines."""
    lines: list[str] = []
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        summary = await rebuild(client, store, settings, lines.append)
    finally:
        await client.aclose()
    assert summary.problems == []
    return lines


async def booked_and_lost(settings: Settings, client: httpx.AsyncClient, wallet: Wallet,
                          sync_redis: redis.Redis) -> dict:
    """The money workload booked and stored; Redis's state then; Redis lost."""
    await create_players(wallet)
    await money_workload(client, wallet)
    await drain(settings)
    before = snapshot(sync_redis)
    sync_redis.flushall()
    return before


async def test_rebuild_recreates_what_the_scripts_wrote(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    before = await booked_and_lost(settings, client, wallet, sync_redis)
    assert any(":tx:oia:" in key for key in before) and any(":sgreq:" in key for key in before)
    started_s = int(time.time())
    await run(settings, store)
    assert same_state(before, snapshot(sync_redis)) == []
    meta = sync_redis.hgetall(Keys.meta())
    assert META_REBUILD_RUNNING not in meta and meta["partitions"] == str(settings.wallet.partitions)
    assert int(meta[META_FILTER_SINCE]) >= started_s  # older timestamps are looked up in the store
    assert meta[META_FILTER_LAYOUT] == f"{settings.oia.filter_generation_s}:{settings.oia.filter_bits}"


async def test_rebuild_recreates_the_records_of_decisions_that_moved_nothing(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    """RECORD.md's journal entries, written live: a recorded refusal, a tombstone and the
    refusal of its late BET, a finished round, block and unblock."""
    await create_players(wallet)
    await money_workload(client, wallet)
    await journal_workload(client, wallet)
    await drain(settings)
    before = snapshot(sync_redis)
    assert {"TOMB", "ERROR", "CANCELED"} <= {value.get("st") for value, _ in before.values() if isinstance(value, dict)}
    sync_redis.flushall()
    await run(settings, store)
    assert same_state(before, snapshot(sync_redis)) == []


async def test_rebuild_twice_and_over_a_half_done_run_gives_the_same_state(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    before = await booked_and_lost(settings, client, wallet, sync_redis)
    await run(settings, store)
    assert (await run(settings, store))[-1].endswith("nothing to do")
    assert same_state(before, snapshot(sync_redis)) == []
    # An interrupted run: some partitions lack their seq mark and some of their keys;
    # balances left moved on (absolute writes must not add to them).
    keys = Keys(settings.wallet.partitions)
    for key in sync_redis.keys("w:{p*}:acct:*"):
        sync_redis.hincrby(key, "bal", 777)
    for key in sorted(sync_redis.keys("w:{p*}:seq")):
        sync_redis.delete(key)
    for key in sorted(sync_redis.keys("w:{p*}:tx:*"))[::2]:
        sync_redis.delete(key)
    sync_redis.hset(keys.meta(), META_REBUILD_RUNNING, "1")
    await run(settings, store)
    assert same_state(before, snapshot(sync_redis)) == []
    assert META_REBUILD_RUNNING not in sync_redis.hgetall(keys.meta())


async def test_rebuild_refuses_a_redis_ahead_of_the_store_and_writes_nothing(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await create_players(wallet)
    await drain(settings)
    assert (await wallet.adjust("613", "deposit", 5, "not-flushed")).code == "OK"  # still in the stream
    before = snapshot(sync_redis)
    meta = sync_redis.hgetall(Keys.meta())
    path = write_config(settings)
    code = await anyio.to_thread.run_sync(cli.main, ["--config", str(path), "rebuild"])
    assert code == cli.EXIT_USAGE
    assert snapshot(sync_redis) == before and sync_redis.hgetall(Keys.meta()) == meta


async def test_rebuild_command_reports_progress_and_refusal_in_one_line(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis,
    capsys: pytest.CaptureFixture[str]
) -> None:
    await booked_and_lost(settings, client, wallet, sync_redis)
    path = write_config(settings)
    assert await anyio.to_thread.run_sync(cli.main, ["--config", str(path), "rebuild"]) == 0
    out, err = capsys.readouterr()
    stored = {p for p in range(settings.wallet.partitions) if sync_redis.get(Keys(settings.wallet.partitions).seq(p))}
    assert f"rebuild: {len(stored)}/{len(stored)} partitions, 15 entries read, 3 players" in err, err
    assert "rebuild: done" in out
    sync_redis.incr(Keys(settings.wallet.partitions).seq(min(stored)))  # Redis one entry ahead
    assert await anyio.to_thread.run_sync(cli.main, ["--config", str(path), "rebuild"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "rebuild refused: Redis is ahead of the ledger store" in err, err
    assert "walletd flush" in err and "Traceback" not in err


def entry(settings: Settings, player: str, seq_of: dict[int, int], kind: str, amount: int, balance: int,
          source: str, ref: str, ts_ms: int, **optional: str) -> LedgerEntry:
    """The next entry of the player's partition, as a script would have written it."""
    partition = Keys(settings.wallet.partitions).partition(player)
    seq = seq_of[partition] = seq_of.get(partition, 0) + 1
    return LedgerEntry(f"{partition}:{seq}", partition, seq, player, kind, amount, balance, source, ref, ts_ms,
                       **optional)  # type: ignore[arg-type]


async def test_rebuild_restores_every_journal_kind_from_entries_stored_directly(
    store: LedgerStore, settings: Settings, sync_redis: redis.Redis
) -> None:
    """RECORD.md's entries written straight into the store: refusals, tombstones, block,
    unblock, finish, a cancel of a refused id, and records past their retention."""
    keys, seqs, now = Keys(settings.wallet.partitions), {}, int(time.time() * 1000)
    old = now - settings.oia.retention_s * 1000 - 1
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR", "lang": "en", "op": OPERATOR}
    fp = "BET|611|{}|EUR|7|200"
    oia = {"operator": OPERATOR, "currency": "EUR", "round_id": "7", "game_id": "200"}
    p = keys.partition("611")
    entries = [
        entry(settings, "611", seqs, "open", 1000, 1000, "admin", "", now - 10, profile=profile),
        entry(settings, "611", seqs, "refusal", 0, 1000, "oia", f"{OPERATOR}|1", now - 9, fp=fp.format(5000),
              code="OP_31", round_finished="0", **oia),
        entry(settings, "611", seqs, "cancel", 0, 1000, "oia", f"{OPERATOR}|1", now - 8, **oia),
        entry(settings, "611", seqs, "tombstone", 0, 1000, "oia", f"{OPERATOR}|2", now - 7, operator=OPERATOR),
        entry(settings, "611", seqs, "tombstone", 0, 1000, "oia", f"{OPERATOR}|3", now - 7, operator=OPERATOR),
        entry(settings, "611", seqs, "refusal", 0, 1000, "oia", f"{OPERATOR}|3", now - 6, fp=fp.format(100),
              code="OP_49", round_finished="", **oia),
        entry(settings, "611", seqs, "bet", -100, 900, "oia", f"{OPERATOR}|4", old, fp=fp.format(100),
              round_finished="0", **oia),
        entry(settings, "611", seqs, "cancel", 100, 1000, "oia", f"{OPERATOR}|4", now - 5, **oia),
        entry(settings, "611", seqs, "finish", 0, 1000, "oia", f"{OPERATOR}|", now - 4, round_id="7",
              operator=OPERATOR),
        entry(settings, "611", seqs, "block", 0, 1000, "admin", "", now - 3, currency="EUR"),
        entry(settings, "611", seqs, "unblock", 0, 1000, "admin", "", now - 2, currency="EUR"),
        entry(settings, "611", seqs, "block", 0, 1000, "admin", "", now - 1, currency="EUR"),
        entry(settings, "611", seqs, "tombstone", 0, 1000, "stargame", "ab12", now - 1),
        entry(settings, "611", seqs, "tombstone", 0, 1000, "stargame", "ab13",
              now - settings.stargame.request_retention_s * 1000 - 1),
        entry(settings, "ghost", seqs, "refusal", 0, 0, "oia", f"{OPERATOR}|9", now, fp="WIN|ghost|1|EUR|1|2",
              code="OP_34", **oia),
    ]
    store.insert(entries)
    await run(settings, store)
    tx = f"{keys.tag(p)}:tx:oia:{OPERATOR}:611|"
    assert sync_redis.hgetall(f"{tx}1") == {"st": "CANCELED", "fp": fp.format(5000), "code": "OP_31",
                                             "bal": "1000", "cur": "EUR", "type": "BET", "amt": "5000"}
    assert sync_redis.hgetall(f"{tx}2") == {"st": "TOMB"}
    assert sync_redis.hgetall(f"{tx}3") == {"st": "ERROR", "fp": fp.format(100), "code": "OP_49", "bal": "0",
                                             "cur": "", "type": "BET", "amt": "100"}
    # booked past the retention, cancelled inside it: the cancel kept the whole record
    assert sync_redis.hgetall(f"{tx}4") == {"st": "CANCELED", "fp": fp.format(100), "code": "OK", "bal": "900",
                                             "cur": "EUR", "type": "BET", "amt": "100"}
    assert 0 < sync_redis.pttl(f"{tx}4") <= settings.oia.retention_s * 1000
    assert sync_redis.hgetall(f"{keys.tag(p)}:round:oia:{OPERATOR}:611|7") == {"game": "200", "fin": "1"}
    account = sync_redis.hgetall(keys.account("611"))
    assert account == {"bal": "1000", **profile, "blocked": "1"}
    assert sync_redis.get(keys.stargame_request(p, "ab12")) == "tombstone"
    assert sync_redis.get(keys.stargame_request(p, "ab13")) is None  # past the StarGame retention
    ghost = keys.partition("ghost")
    assert sync_redis.hgetall(f"{keys.tag(ghost)}:tx:oia:{OPERATOR}:ghost|9")["code"] == "OP_34"
    assert not sync_redis.exists(keys.account("ghost"))  # a journal entry never creates a player
    assert sync_redis.get(keys.seq(p)) == str(seqs[p])


async def test_rebuild_reports_a_balance_the_entries_do_not_sum_to_and_stays_marked(
    store: LedgerStore, settings: Settings, sync_redis: redis.Redis
) -> None:
    seqs: dict[int, int] = {}
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR"}
    opened = entry(settings, "611", seqs, "open", 1000, 1000, "admin", "", 1, profile=profile)
    wrong = entry(settings, "611", seqs, "deposit", 5, 1010, "admin", "d", 2, currency="EUR")
    store.insert([opened, wrong])
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        summary = await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    assert summary.problems == ["player 611: the ledger's last balance_after is 1010, its entries sum to 1005"]
    assert META_REBUILD_RUNNING in sync_redis.hgetall(Keys.meta())  # walletd keeps refusing
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:  # every partition is level now; the flag still makes a second run check it all again
        again = await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    assert again.problems == summary.problems and again.partitions == 1
    assert META_REBUILD_RUNNING in sync_redis.hgetall(Keys.meta())


async def test_rebuild_counts_a_players_transfer_legs_and_reports_what_it_cannot_restore_yet(
    store: LedgerStore, settings: Settings, sync_redis: redis.Redis
) -> None:
    """Transfers (docs/transfers.md) have no scripts yet: a ledger holding their legs or an
    agent's entries was written by a newer walletd. The rebuild does not stop on them: the
    player's balance counts its legs; it names each partition it could not fully restore
    and stays marked (walletd keeps refusing)."""
    keys, seqs = Keys(settings.wallet.partitions), {}
    assert keys.partition("611") != keys.partition("agent7")
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR"}
    transfer = "agent:agent7|dep-1"
    store.insert([
        entry(settings, "611", seqs, "open", 1000, 1000, "admin", "", 1, profile=profile),
        entry(settings, "agent7", seqs, "transfer_out", -300, 700, "transfer", transfer, 2, account_kind="agent",
              counterparty="player:611", currency="EUR"),
        entry(settings, "611", seqs, "transfer_in", 300, 1300, "transfer", transfer, 3, counterparty="agent:agent7",
              currency="EUR"),
    ])
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        summary = await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    agent_partition, player_partition = keys.partition("agent7"), keys.partition("611")
    assert sorted(summary.problems) == sorted([
        f"partition {agent_partition}: 1 ledger entries need agents' accounts, which this walletd cannot restore "
        f"(docs/transfers.md): a newer walletd wrote them",
        f"partition {player_partition}: 1 ledger entries need transfer records, which this walletd cannot restore "
        f"(docs/transfers.md): a newer walletd wrote them"])
    assert sync_redis.hget(keys.account("611"), "bal") == "1300"
    assert not sync_redis.exists(keys.account("agent7")) and not sync_redis.exists(keys.agent("agent7"))
    assert sync_redis.get(keys.seq(agent_partition)) == "1"  # the entry counts: its id stays taken
    assert META_REBUILD_RUNNING in sync_redis.hgetall(Keys.meta())


async def test_a_rebuild_that_stopped_before_clearing_its_flag_is_finished_by_the_next(
    store: LedgerStore, settings: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    before = await booked_and_lost(settings, client, wallet, sync_redis)
    await run(settings, store)
    sync_redis.hset(Keys.meta(), META_REBUILD_RUNNING, "1")  # stopped after its last seq mark
    sync_redis.delete(*sync_redis.keys("w:{p*}:tx:*"))  # and, say, before some of its writes landed
    lines = await run(settings, store)
    assert "nothing to do" not in lines[-1]
    assert same_state(before, snapshot(sync_redis)) == []
    assert META_REBUILD_RUNNING not in sync_redis.hgetall(Keys.meta())


async def test_rebuild_stops_when_something_books_in_the_partition_meanwhile(
    store: LedgerStore, settings: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    seqs: dict[int, int] = {}
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR"}
    store.insert([entry(settings, "611", seqs, "open", 1000, 1000, "admin", "", 1, profile=profile)]
                 + [entry(settings, "611", seqs, "deposit", 1, 1001 + i, "admin", f"d{i}", 2) for i in range(4)])
    monkeypatch.setattr("app.ledger.rebuild.READ_BATCH", 2)
    real_read = store.read
    seq_key = Keys(settings.wallet.partitions).seq(Keys(settings.wallet.partitions).partition("611"))

    def read_then_book(partition: int, after_seq: int, limit: int) -> list[LedgerEntry]:
        if after_seq > 0:
            sync_redis.incr(seq_key)  # a walletd booking here between two batches
        return real_read(partition, after_seq, limit)

    monkeypatch.setattr(store, "read", read_then_book)
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        with pytest.raises(RebuildRefused, match="seq counter moved from 0 to 1"):
            await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    assert sync_redis.get(seq_key) == "1"  # the booking's, not the rebuild's 5


async def test_a_store_of_the_old_16_partitions_is_refused_before_redis_is_written(
    store: LedgerStore, settings: Settings, sync_redis: redis.Redis
) -> None:
    """A deployment made when the default was 16 partitions loses its Redis and is upgraded
    (or moved to a cluster) without setting it: rebuild with 256 refuses, naming the fix,
    and writes nothing. It used to write partitions = 256 and the rebuild flag into Redis,
    then stop on a traceback at the first player: neither count was let in after that."""
    assert settings.wallet.partitions == 256
    old = Keys(16)
    players = [f"p{i}" for i in range(40)]
    assert any(old.partition(p) != Keys(256).partition(p) for p in players)
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR", "lang": "en", "op": OPERATOR}
    seqs: dict[int, int] = {}
    now = int(time.time() * 1000)
    entries = []
    for player in players:
        partition = old.partition(player)
        seq = seqs[partition] = seqs.get(partition, 0) + 1
        entries.append(LedgerEntry(f"{partition}:{seq}", partition, seq, player, "open", 100, 100, "admin", "",
                                   now, profile=profile))
    store.insert(entries)
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        with pytest.raises(RebuildRefused) as refused:
            await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    assert "the store was written with another partition count" in str(refused.value)
    assert "16 for a deployment made before the default became 256" in str(refused.value)
    assert sync_redis.keys("*") == []  # nothing written: set partitions = 16 and run it again
    settings.wallet.partitions = 16
    assert len(await run(settings, store)) >= 1
    assert sync_redis.hget(Keys.meta(), "partitions") == "16"
