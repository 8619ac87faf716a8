"""Review of issue 11's rebuild and cold-start guard: a rebuilt Redis compared key by
key with the live one for a richer workload (StarGame reconciler outcomes, admin refs
full of `{}:|`), a Redis truncated so that some partitions are ahead of the ledger
store and others behind it, and a Redis restarted without (all) its data under a
running walletd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.keys import Keys
from app.ledger import LedgerEntry, LedgerStore, open_store
from app.ledger.rebuild import RebuildRefused, rebuild
from app.protocols.stargame.journal import Note
from app.protocols.stargame.wallet import book as stargame_book
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, new_session
from tests.rebuild_calls import create_players, journal_workload, money_workload, same_state, snapshot
from tests.support import ADMIN_TOKEN, OPERATOR, drain, reconciler_for, serving

pytestmark = pytest.mark.anyio

Dump = dict[bytes, bytes]


@pytest.fixture
def store(settings: Settings) -> Iterator[LedgerStore]:
    opened = open_store(settings.storage_url)
    yield opened
    opened.close()


async def run_rebuild(settings: Settings, store: LedgerStore) -> None:
    client = redis.asyncio.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        summary = await rebuild(client, store, settings, lambda line: None)
    finally:
        await client.aclose()
    assert summary.problems == []


async def reconciled_requests(settings: Settings, wallet: Wallet) -> None:
    """The three outcomes of the StarGame reconciler: a landed bet reversed, a landed win
    notification kept, a request that never landed tombstoned."""
    reconciler = reconciler_for(settings, wallet)
    now = int(time.time() * 1000)
    landed_bet = await stargame_book(wallet, "612", 300, 100, 0, request_id="aa01" * 8)
    landed_win = await stargame_book(wallet, "612", 0, 400, 0, request_id="aa02" * 8)
    assert landed_bet.code == landed_win.code == "OK"
    for request_id, bet, win in (("aa01" * 8, 300, 100), ("aa02" * 8, 0, 400), ("aa03" * 8, 500, 0)):
        await reconciler.settle(Note(request_id, "612", "612", bet, win, now))
    assert reconciler.counts["reversed"] == reconciler.counts["kept"] == reconciler.counts["tombstoned"] == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The settings with a ledger store of each kind (before the fixtures that use it)."""
    if request.param == "postgresql":
        settings.storage.url = request.getfixturevalue("postgresql_url")
    return settings


async def test_a_rebuilt_redis_holds_what_the_live_one_held_for_every_decision(
    any_store: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis, store: LedgerStore
) -> None:
    settings = any_store
    await create_players(wallet)
    await money_workload(client, wallet)
    await journal_workload(client, wallet)
    await reconciled_requests(settings, wallet)
    for ref in ("{p1}:x|y", "a|b:{c}"):
        assert (await wallet.adjust("613", "deposit", 7, ref)).code == "OK"
    await drain(settings)
    before = snapshot(sync_redis)
    sync_redis.flushall()
    await run_rebuild(settings, store)
    after = snapshot(sync_redis)
    # README "Rebuild": a kept win notification's record comes back as 'booked' (no ledger
    # entry records the keeping; a retry is refused either way, a second reconcile keeps it).
    kept = Keys(settings.wallet.partitions).stargame_request(Keys(settings.wallet.partitions).partition("612"),
                                                              "aa02" * 8)
    (value, expiry), (value_after, expiry_after) = before.pop(kept), after.pop(kept)
    assert value.startswith("kept|") and value_after == value.replace("kept|", "booked|0|400|")
    assert expiry_after is not None and expiry is not None and abs(expiry - expiry_after) <= 1
    assert same_state(before, after) == []


async def test_a_truncated_redis_ahead_in_one_partition_and_behind_in_another_can_be_rebuilt(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, store: LedgerStore
) -> None:
    """An AOF cut at an instant T: a partition whose flusher lagged still holds an entry
    the store lacks (ahead), one flushed after T lost an entry the store holds (behind).
    The guard refuses until the behind one is rebuilt, and the flusher waits on the
    guard: rebuild must not refuse because of the ahead one, or nothing can ever move."""
    keys = Keys(settings.wallet.partitions)
    ahead, behind = "611", "612"
    p_ahead, p_behind = keys.partition(ahead), keys.partition(behind)
    assert p_ahead != p_behind
    await wallet.create_player(ahead, "EUR", 100, "", "en", "", [], operator_id=OPERATOR)
    await wallet.create_player(behind, "EUR", 100, "", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    assert (await wallet.adjust(ahead, "deposit", 5, "not-flushed")).code == "OK"  # before T, not stored
    # After T, stored, then lost with the AOF's tail: the store holds it, Redis does not.
    lost = LedgerEntry(f"{p_behind}:2", p_behind, 2, behind, "deposit", 9, 109, "admin", "lost",
                       int(time.time() * 1000), currency="EUR")
    store.insert([lost])
    try:
        await run_rebuild(settings, store)
    except RebuildRefused as refused:
        pytest.fail(f"rebuild refuses while the guard refuses too: {refused}")
    assert sync_redis.hget(keys.account(behind), "bal") == "109"
    assert sync_redis.hget(keys.account(ahead), "bal") == "105"  # left as Redis had it
    async with serving(settings) as client:
        assert (await client.get("/healthz")).status_code == 200  # the guard lets walletd serve
    assert await drain(settings) == 1  # the ahead partition's entry is stored after all


def dump(url: str) -> Dump:
    """Every key of Redis, DUMPed: what an AOF copy taken now would restore."""
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


def load(url: str, keys: Dump) -> None:
    """Redis holds exactly `keys`, as a restart on that AOF leaves it: no scripts cached."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
        for key, value in keys.items():
            client.restore(key, 0, value)
        client.script_flush()
    finally:
        client.close()


@pytest.mark.parametrize("script_client", ["pipelined", "redis-py"])
async def test_a_redis_restarted_without_its_data_is_refused_before_the_first_write_not_at_the_next_check(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, script_client: str
) -> None:
    """Redis restarted under a running walletd with its AOF lost, or cut back to an older
    state: before the guard's next check (up to RECHECK_S) walletd would book on it, its
    seq counters behind the store's, so its entries would take ids the ledger store
    already holds (never stored), and a WIN be credited over an older balance. A restart
    empties the script cache: the first script's NOSCRIPT has the guard compare first."""
    settings.redis.script_client = script_client  # (redis-py's pool reconnects unseen)
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    older = dump(settings.redis.url)  # an AOF cut back to here
    await wallet.adjust("611", "deposit", 100, "d1")
    await drain(settings)
    level = dump(settings.redis.url)
    keys = Keys(settings.wallet.partitions)
    for lost in (older, {}):
        async with serving(settings) as client:
            token = await new_session(client, "611")
            assert (await client.get("/healthz")).status_code == 200
            load(settings.redis.url, lost)
            answer = await call(client, "changebalance", change("611", 5, "WIN", 1.00, token=token))
            created = await client.post("/admin/players", json={"player_id": "611", "currency": "EUR"},
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        written = sync_redis.xrange(keys.ledger(keys.partition("611")))
        assert error_code(answer) == "OP_50" and written == [], (answer, written)
        assert created.status_code == 503, created.text
        assert await drain(settings) == 0
        load(settings.redis.url, level)
