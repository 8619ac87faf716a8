"""The embedded redis-server's AOF rewrites: Redis's own only after walletd's
threshold, and walletd's at quiet moments (README "Durability", AOF rewrites)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from app.redis_server import AOF_REWRITE_MIN_SIZE, QuietRewriter
from tests.redis_servers import PrivateRedis, private_redis

REWRITE_WAIT_S = 30.0


def test_the_embedded_redis_rewrites_its_aof_only_after_walletds_threshold(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        assert client.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"] == str(2**30)
        assert client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "100"
    finally:
        client.close()
    assert AOF_REWRITE_MIN_SIZE == "1gb"


def aof_redis(directory: Path) -> contextlib.AbstractContextManager[PrivateRedis]:
    return private_redis(directory, extra=("--appendonly", "yes", "--appendfsync", "always",
                                           "--auto-aof-rewrite-percentage", "0"))


def grow_aof(client: redis.Redis, megabytes: int) -> None:
    value = "x" * 2**20
    for i in range(megabytes):
        client.set(f"filler:{i}", value)


def wait_for_rewrite(client: redis.Redis) -> dict:
    deadline = time.monotonic() + REWRITE_WAIT_S
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return info
        time.sleep(0.05)
    raise AssertionError("the AOF rewrite did not finish")


@pytest.mark.slow
def test_a_quiet_redis_whose_aof_grew_is_rewritten_at_the_second_quiet_look(tmp_path: Path) -> None:
    with aof_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.admin_url)
        grow_aof(client, 3)
        client.delete(*(f"filler:{i}" for i in range(3)))  # a rewrite can drop them
        before = client.info("persistence")["aof_current_size"]
        rewriter = QuietRewriter(server.admin_url, growth_min=2 * 2**20, ops_max=1000)
        assert not rewriter.check(client)  # one quiet look is not enough
        assert rewriter.check(client)
        after = wait_for_rewrite(client)
        assert after["aof_current_size"] < before // 10
        assert not rewriter.check(client)  # nothing left to gain
        client.close()


@pytest.mark.slow
def test_a_busy_redis_or_a_small_growth_is_left_alone(tmp_path: Path) -> None:
    with aof_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.admin_url)
        grow_aof(client, 2)
        forks = client.info("stats")["total_forks"]
        busy = QuietRewriter(server.admin_url, growth_min=2**20, ops_max=-1)  # never quiet
        small = QuietRewriter(server.admin_url, growth_min=64 * 2**20, ops_max=1000)
        for _ in range(3):
            assert not busy.check(client) and not small.check(client)
        assert client.info("stats")["total_forks"] == forks
        client.close()


def kill_rewrite_child(server: PrivateRedis) -> None:
    """End the rewrite's forked child as a full disk or the OOM killer would."""
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, "one rewrite child"
    os.kill(int(children[0]), signal.SIGKILL)


@pytest.mark.slow
def test_a_failed_rewrite_is_tried_again_only_after_a_backoff(tmp_path: Path) -> None:
    """Each try forks and writes the whole dataset: a rewrite that keeps failing (a full
    disk) must not be retried at every quiet look."""
    retry_s = 1.0
    with aof_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.admin_url, decode_responses=True)
        grow_aof(client, 3)
        client.config_set("rdb-key-save-delay", 1_000_000)  # the rewrite child dwells on each key
        rewriter = QuietRewriter(server.admin_url, growth_min=2**20, ops_max=1000, retry_min_s=retry_s)
        assert not rewriter.check(client)
        assert rewriter.check(client)
        time.sleep(0.2)  # the child is forked
        kill_rewrite_child(server)
        assert wait_for_rewrite(client)["aof_last_bgrewrite_status"] == "err"
        client.config_set("rdb-key-save-delay", 0)
        failed_at = time.monotonic()
        forks = client.info("stats")["total_forks"]
        while time.monotonic() - failed_at < retry_s * 0.8:
            assert not rewriter.check(client)  # quiet, grown, and still left alone
            time.sleep(0.1)
        assert client.info("stats")["total_forks"] == forks
        time.sleep(retry_s)
        assert rewriter.check(client)  # the backoff has passed: tried again, and it works
        assert wait_for_rewrite(client)["aof_last_bgrewrite_status"] == "ok"
        client.close()
