"""GET /metrics (app/metrics.py, app/callback_meter.py), the app in process against real
Redis: after a known set of callbacks every counter and histogram count is exact;
refusals are counted by reason; no request can add a series; off when disabled.
Across processes (workers, the flush process): tests/test_metrics_processes.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis

from app.callback_meter import LATENCY_BUCKETS_S, CallbackMeter
from app.metrics import sweep_dead
from app.runtime import Runtime
from app.settings import STARLETTE_PATHS, ConfigError, Settings, check_paths
from app.wallet import Wallet
from tests.oia_calls import call, change, envelope, error_code, new_session, post
from tests.scrape import Samples, answers, answers_by_command, counts, named, samples
from tests.support import BUSY_LUA, OPERATOR, serving

pytestmark = pytest.mark.anyio


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def sg(client: httpx.AsyncClient, **params: str) -> str:
    r = await client.get("/stargame", params=params)
    return r.json()["status"] if r.status_code == 200 else str(r.status_code)


def check_histograms(scraped: Samples) -> None:
    """Each command's buckets rise to its count (at +Inf), and the count is its answers."""
    for labels, count in named(scraped, "walletd_callback_duration_seconds_count").items():
        buckets = named(scraped, "walletd_callback_duration_seconds_bucket", **dict(labels))
        by_bound = sorted((float(dict(b)["le"]), v) for b, v in buckets.items())
        assert [bound for bound, _ in by_bound] == [*LATENCY_BUCKETS_S, float("inf")]
        values = [v for _, v in by_bound]
        assert values == sorted(values) and values[-1] == count
    assert answers_by_command(answers(scraped)) == counts(scraped)


async def test_known_callbacks_are_counted_exactly(client: httpx.AsyncClient, player: str, wallet: Wallet) -> None:
    await wallet.create_player("sg1", "EUR", 500, "DE", "en", "", [], operator_id=OPERATOR)
    token = await new_session(client, player)
    assert (await call(client, "authenticate", {"token": token}))["status"] == "OK"
    for tx in (1, 2):
        assert (await call(client, "changebalance", change(player, tx, token=token)))["status"] == "OK"
    assert error_code(await call(client, "changebalance", change(player, 3, amount=1e6, token=token))) == "OP_31"
    assert error_code(await call(client, "status", {"user_id": player, "transaction_id": 99})) == "OP_41"
    bad_hash = {**envelope("balance", {"user_id": player, "token": token, "currency_code": "EUR"}), "hash": "0" * 40}
    assert (await post(client, "balance", bad_hash)).json()["response"]["data"]["error_code"] == "OP_20"
    assert (await post(client, "balance", {}, authorization="wrong")).status_code == 403
    assert error_code(await call(client, "transfer", {})) == "OP_50"  # no such command: "unknown"
    assert (await client.get("/oia/ping")).text == "PONG"
    assert await sg(client, cmd="getBalance", uid="sg1") == "success"
    assert await sg(client, cmd="writeBet", uid="sg1", bet="100", win="0") == "success"
    assert await sg(client, cmd="writeBet", uid="sg1", bet="10000", win="0") == "fail"  # insufficient funds
    assert await sg(client, cmd="getBalance", uid="nobody") == "fail"
    assert await sg(client, cmd="getBalance") == "fail"  # no uid
    assert (await client.post("/stargame")).status_code == 405

    scraped = await scrape(client)
    assert answers(scraped) == {
        ("oia", "authenticate", "OK"): 1, ("oia", "changebalance", "OK"): 2, ("oia", "changebalance", "OP_31"): 1,
        ("oia", "status", "OP_41"): 1, ("oia", "balance", "OP_20"): 1, ("oia", "balance", "forbidden"): 1,
        ("oia", "unknown", "OP_50"): 1, ("oia", "ping", "OK"): 1,
        ("stargame", "getBalance", "success"): 1, ("stargame", "writeBet", "success"): 1,
        ("stargame", "writeBet", "insufficient_funds"): 1, ("stargame", "getBalance", "unknown_player"): 1,
        ("stargame", "getBalance", "bad_request"): 1, ("stargame", "unknown", "method_not_allowed"): 1,
    }
    check_histograms(scraped)
    assert not any(named(scraped, "walletd_callback_refusals_total").values())
    assert set(named(scraped, "walletd_callbacks_in_flight").values()) == {0}
    assert (await scrape(client)).keys() == scraped.keys()  # scraping again adds no series
    assert answers(await scrape(client)) == answers(scraped)  # nor counts anything twice


async def test_deadline_refusals_are_counted(settings: Settings, player: str, wallet: Wallet) -> None:
    await wallet.create_player("sg1", "EUR", 500, "DE", "en", "", [], operator_id=OPERATOR)
    settings.oia.budget_ms = settings.stargame.budget_ms = -1  # every request arrives already late
    async with serving(settings) as client:
        token = await new_session(client, player)
        assert error_code(await call(client, "changebalance", change(player, 1, token=token))) == "OP_47"
        assert await sg(client, cmd="writeBet", uid="sg1", bet="100", win="0") == "fail"
        scraped = await scrape(client)
    refusals = {key: v for key, v in named(scraped, "walletd_callback_refusals_total").items() if v}
    assert {tuple(dict(k)[n] for n in ("protocol", "command", "reason")): v for k, v in refusals.items()} == {
        ("oia", "changebalance", "deadline"): 1, ("stargame", "writeBet", "deadline"): 1}
    assert answers(scraped) == {("oia", "changebalance", "OP_47"): 1, ("stargame", "writeBet", "deadline"): 1}


@contextlib.asynccontextmanager
async def redis_busy(url: str, seconds: float) -> AsyncIterator[None]:
    """Redis runs a script for `seconds`: calls sent meanwhile get no reply in time."""
    busy = redis.Redis.from_url(url)
    blocker = asyncio.create_task(asyncio.to_thread(busy.eval, BUSY_LUA, 0, int(seconds * 1_000_000)))
    await asyncio.sleep(0.1)
    try:
        yield
    finally:
        await blocker
        busy.close()


async def test_lost_replies_are_counted_as_outcome_unknown(settings: Settings, player: str, wallet: Wallet) -> None:
    await wallet.create_player("sg1", "EUR", 500, "DE", "en", "", [], operator_id=OPERATOR)
    settings.redis.socket_timeout_ms = 200
    settings.stargame.budget_ms = 5000
    async with serving(settings) as client:
        token = await new_session(client, player)
        assert await sg(client, cmd="getBalance", uid="sg1") == "success"  # connected, currency known
        async with redis_busy(settings.redis.url, 1.0):
            oia, stargame = await asyncio.gather(
                call(client, "changebalance", change(player, 1, token=token)),
                sg(client, cmd="writeBet", uid="sg1", bet="100", win="0"))
        assert error_code(oia) == "OP_47" and stargame == "fail"
        scraped = await scrape(client)
    assert answers(scraped) == {("oia", "changebalance", "OP_47"): 1, ("stargame", "getBalance", "success"): 1,
                                ("stargame", "writeBet", "outcome_unknown"): 1}
    refusals = named(scraped, "walletd_callback_refusals_total", reason="outcome_unknown")
    assert sorted((dict(k)["protocol"], dict(k)["command"]) for k, v in refusals.items() if v) == [
        ("oia", "changebalance"), ("stargame", "writeBet")]


async def test_hostile_requests_add_no_series(client: httpx.AsyncClient, player: str) -> None:
    before = (await scrape(client)).keys()
    for i in range(30):
        evil = f"x{i}\u202e{'%' * i}"
        await post(client, f"cmd{i}", envelope(f"cmd{i}", {"a": i}), operator=f"op{i}")
        await post(client, f"cmd{i}", b"\xff" * i)
        await client.post(f"/oia/{evil}", content=b"{}")
        await client.get("/stargame", params={"cmd": evil, "uid": evil, "OP_99": evil})
        await client.get(f"/stargame/{evil}")
        await client.get(f"/{evil}")
        await client.request("BREW", "/stargame")
    after = await scrape(client)
    assert after.keys() == before
    # Each round: two OIA calls refused 403, one OP_50, a StarGame bad_request and a 405.
    assert sum(v for (_, command, _), v in answers(after).items() if command == "unknown") == 150


async def test_metrics_are_off_when_disabled(settings: Settings) -> None:
    settings.metrics.enabled = False
    async with serving(settings) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert await sg(client, cmd="getBalance", uid="nobody") == "fail"  # the callbacks are served uncounted


def test_no_protocol_path_can_take_metrics() -> None:
    assert "/metrics" in STARLETTE_PATHS
    with pytest.raises(ConfigError, match="/metrics"):
        check_paths("/metrics", "/stargame")


def test_a_meter_counts_an_invented_command_or_outcome_under_fixed_labels() -> None:
    meter = CallbackMeter("p", ["a"], {"OK": ("OK", "")})
    meter.record("a", "OK", 0.0003)
    meter.record("zzz", "OK", 0.2)
    meter.record("a", "OP_99", 0.05)
    assert set(meter.rows) == {"a", "unknown"}
    assert meter.rows["a"].answers == [1, 1]  # OK, other
    assert meter.rows["a"].buckets[1] == 1 and meter.rows["a"].buckets[9] == 1  # <= 0.5 ms, <= 50 ms
    assert meter.rows["unknown"].buckets[-1] == 1  # over 100 ms: +Inf


def test_a_dead_processes_live_gauges_are_dropped(tmp_path: Path) -> None:
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it: no such process
    dead, alive = tmp_path / f"gauge_livesum_{gone}.db", tmp_path / "gauge_livesum_1.db"  # init
    kept = tmp_path / f"counter_{gone}.db"  # a dead process's counts still count
    for path in (dead, alive, kept):
        path.write_bytes(b"")
    sweep_dead(tmp_path)
    assert not dead.exists() and alive.exists() and kept.exists()


def in_flight(got: Samples) -> dict[str, float]:
    return {dict(k)["protocol"]: v for k, v in named(got, "walletd_callbacks_in_flight").items()}


def pending(got: Samples) -> float | None:
    return named(got, "walletd_redis_script_client_pending").get(())


async def scrape_until(client: httpx.AsyncClient, done: Callable[[Samples], bool], seconds: float = 2.0) -> Samples:
    """Scrapes until done(samples) or seconds passed; the last scrape either way."""
    got = await scrape(client)
    for _ in range(int(seconds / 0.05)):
        if done(got):
            break
        await asyncio.sleep(0.05)
        got = await scrape(client)
    return got


async def test_script_client_pending_calls_and_callbacks_in_flight_are_seen(
    settings: Settings, player: str, wallet: Wallet
) -> None:
    await wallet.create_player("sg1", "EUR", 500, "DE", "en", "", [], operator_id=OPERATOR)
    settings.redis.socket_timeout_ms = 1500
    settings.stargame.budget_ms = 5000
    async with serving(settings) as client:
        token = await new_session(client, player)
        assert await sg(client, cmd="getBalance", uid="sg1") == "success"
        async with redis_busy(settings.redis.url, 2.5):
            calls = asyncio.gather(call(client, "changebalance", change(player, 1, token=token)),
                                   sg(client, cmd="writeBet", uid="sg1", bet="100", win="0"))
            # Both written, waiting behind the script (polled: a loaded machine is slow to get there).
            during = await scrape_until(client, lambda got: pending(got) == 2 and in_flight(got)
                                        == {"oia": 1, "stargame": 1})
            await calls
        # The timed-out calls' late replies are read once Redis is free.
        after = await scrape_until(client, lambda got: pending(got) == 0)
    assert in_flight(during) == {"oia": 1, "stargame": 1}
    assert pending(during) == 2
    assert set(named(after, "walletd_callbacks_in_flight").values()) == {0}
    assert named(after, "walletd_redis_script_client_pending") == {(): 0}


async def test_reconnects_of_the_script_client_are_counted(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("sg1", "EUR", 500, "DE", "en", "", [], operator_id=OPERATOR)
    assert await sg(client, cmd="getBalance", uid="sg1") == "success"
    assert named(await scrape(client), "walletd_redis_script_client_reconnects_total") == {(): 0}
    sync_redis.client_kill_filter(_type="normal", skipme=True)  # every other client: walletd's too
    await asyncio.sleep(0.1)
    answers_after = [await sg(client, cmd="getBalance", uid="sg1") for _ in range(3)]
    assert answers_after[-1] == "success"
    assert named(await scrape(client), "walletd_redis_script_client_reconnects_total") == {(): 1}


async def test_failed_store_lookups_are_counted(client: httpx.AsyncClient, player: str, settings: Settings) -> None:
    app_reader = client._transport.app.state.service.runtime.store_reader  # type: ignore[attr-defined]
    not_a_folder = settings.data_path.parent / "not-a-folder"
    not_a_folder.write_text("")
    app_reader.close()
    app_reader.url = f"sqlite:///{not_a_folder / 'ledger.db'}"  # the store cannot be opened any more
    assert error_code(await call(client, "status", {"user_id": player, "transaction_id": 7})) == "OP_50"
    errors = named(await scrape(client), "walletd_ledger_store_errors_total", source="lookup")
    assert list(errors.values()) == [1]


async def test_the_flushers_store_failures_and_stored_entries_are_counted(settings: Settings, player: str) -> None:
    async with Runtime(settings, settings.redis.url, ledger=True) as runtime:
        flusher, store = runtime.flusher, runtime.store
        assert flusher is not None and store is not None
        store.close()  # the store fails the batch: it stays pending
        with pytest.raises(Exception, match="closed"):
            await flusher.drain()
        assert (flusher.store_errors, flusher.entries_stored) == (1, 0)
    async with Runtime(settings, settings.redis.url, ledger=True) as runtime:
        assert runtime.flusher is not None
        await runtime.flusher.drain()
        assert (runtime.flusher.store_errors, runtime.flusher.entries_stored) == (0, 1)  # the player's opening
