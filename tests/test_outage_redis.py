"""Redis killed (-9) and restarted on its AOF under a running `walletd serve` with load
(README "Outages"): every callback answers OK or its protocol's clean refusal within
its budget, none OK while Redis is gone; walletd serves again within about a second of
Redis answering, by itself; the log says so once each way; and every booking answered
OK is stored exactly once, none refused as unsent is stored."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from tests.outage import (
    AOF,
    OPENING_MINOR,
    SG_BUDGET_MS,
    Answer,
    Load,
    first_ok_after,
    late_answers,
    money_problems,
    oks_between,
    summary,
    wait_for,
    wrong_answers,
)
from tests.process import Server, walletd
from tests.redis_servers import PrivateRedis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOAD_S = 1.5
DOWN_S = 2.0
AFTER_S = 2.5
# The requirement is 1 s from Redis answering to walletd serving; the rest is slack for
# a loaded 2-core machine (the load's own client shares the test's event loop).
BACK_WITHIN_S = 1.0 + 1.0
# Log lines about one outage besides the writeBets noted for the reconciler: the link's
# two, and in each process (serve's, the flush process's) one or two each from the flusher,
# the reconciler and the cold-start guard; never one per refused call (there are hundreds).
OUTAGE_LINES_MAX = 12
REFUSALS_DURING_OUTAGE_MIN = 20
# A slow restart: PAD_KEYS keys to load at KEY_LOAD_DELAY_US each, about 2 s on a busy machine.
PAD_KEYS = 8_000
KEY_LOAD_DELAY_US = 50
REWRITE_WAIT_S = 20.0  # the load kept asking while Redis was gone


def outage_lines(log: str) -> list[str]:
    """Lines of serve's log (its flush process's too) that report trouble or its end."""
    return [line for line in log.splitlines() if " ERROR " in line or " WARNING " in line or "walletd.redis" in line]


@pytest.mark.parametrize("loading", ["quick", "slow"])
async def test_redis_killed_and_restarted_under_load(tmp_path: Path, loading: str) -> None:
    """slow: the restarted Redis takes about a second to load its data, accepting
    connections but answering nothing meanwhile."""
    extra = AOF + (("--key-load-delay", str(KEY_LOAD_DELAY_US)) if loading == "slow" else ())
    backing = PrivateRedis(tmp_path / "redis", extra=extra).start()
    server = Server(tmp_path / "w", redis_url=backing.admin_url, budget_ms=SG_BUDGET_MS)
    storage_url = f"sqlite:///{tmp_path / 'w' / 'ledger.db'}"
    try:
        server.start()
        load = Load(server.base_url, ["ro1", "ro2"], ["rs1", "rs2"], workers=8)
        await load.create_players()
        if loading == "slow":
            pad_and_rewrite(backing.admin_url)
        log_before = server.log.read_text()
        load.start()
        await asyncio.sleep(LOAD_S)
        assert backing.process is not None
        backing.process.kill()
        backing.process.wait()
        killed = time.monotonic()
        await asyncio.sleep(DOWN_S)
        restarting = time.monotonic()
        up = await asyncio.to_thread(start_timed, backing)  # same port, same AOF
        await asyncio.sleep(AFTER_S)
        answers = await load.finish()
        print(f"\n{summary(answers)}")
        settled = await wait_for(lambda: sg_balances_settled(backing.admin_url, answers))
        server.stop()  # verify drains the rest alone, not racing serve's flusher
        log = server.log.read_text()[len(log_before):]  # after the stop: every line is written
        check = walletd(server.config, "verify", check=False)
    finally:
        server.stop()
        backing.stop()
    assert wrong_answers(answers) == []
    assert late_answers(answers) == []
    # Outcome unknown only for calls on their way when Redis died; a call to the
    # restarted Redis waits (in the connect's PING) while it loads, and leaves unsent.
    assert [a for a in answers if a.outcome == "OP_47" and a.sent > killed] == []
    assert oks_between(answers, killed, restarting) == [], "OK while Redis was down"
    during = [a for a in answers if killed < a.sent and a.received < restarting]
    assert len(during) >= REFUSALS_DURING_OUTAGE_MIN, summary(answers)
    back = {p: first_ok_after(answers, up, p) for p in ("oia", "stargame")}
    print(f"Redis answering -> first OK: OIA {back['oia'] * 1000:.0f} ms, "
          f"StarGame {back['stargame'] * 1000:.0f} ms (restart took {(up - restarting) * 1000:.0f} ms)")
    assert max(back.values()) < BACK_WITHIN_S, back
    assert settled, "StarGame balances never matched the answered successes"
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    check_outage_log(log, load.workers // 2)


def check_outage_log(log: str, writebet_workers: int) -> None:
    lines = outage_lines(log)
    print("\n".join(lines))
    assert "Traceback" not in log
    # Once each way from the hot path, not per request (app/redis_link.py).
    assert len([line for line in lines if "walletd.redis:" in line and "callbacks are refused" in line]) == 1, lines
    assert len([line for line in lines if "walletd.redis:" in line and "answers again" in line]) == 1, lines
    notes = [line for line in lines if "noted for the reconciler" in line]
    assert len(notes) <= writebet_workers, notes  # one per writeBet on its way at the kill, at most
    assert len(lines) - len(notes) <= OUTAGE_LINES_MAX, lines


def pad_and_rewrite(url: str) -> None:
    """Keys a restart must load (key-load-delay each) from an AOF rewritten with its RDB
    preamble, which is where Redis applies that delay."""
    client = redis.Redis.from_url(url)
    try:
        client.eval("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'pad:' .. i, i) end", 0, PAD_KEYS)
        client.bgrewriteaof()
        deadline = time.monotonic() + REWRITE_WAIT_S
        while client.info("persistence")["aof_rewrite_in_progress"] or \
                client.info("persistence")["aof_rewrite_scheduled"]:
            assert time.monotonic() < deadline, "the AOF rewrite did not finish"
            time.sleep(0.05)
    finally:
        client.close()


def start_timed(backing: PrivateRedis) -> float:
    """Starts the server and returns when it first answered (monotonic)."""
    backing.start()
    return time.monotonic()


def sg_balances_settled(url: str, answers: list[Answer]) -> bool:
    """Each StarGame player's balance in Redis is its opening less its successes
    (the reconciler has reversed every fail whose booking had landed)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        for player in {a.player for a in answers if a.protocol == "stargame"}:
            oks = sum(1 for a in answers if a.player == player and a.outcome == "OK")
            balance = next(int(client.hget(key, "bal") or 0) for key in client.scan_iter(f"*:acct:{player}"))
            if balance != OPENING_MINOR - oks:
                return False
        return True
    finally:
        client.close()
