"""`walletd serve` refuses a Redis that would lose answered bookings (item 14)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app import redis_durability
from app.redis_client import connect
from app.redis_server import find_binary, free_port, wait_ready
from app.settings import RedisSettings
from tests.process import Server

pytestmark = pytest.mark.slow

EXIT_STARTUP = 2


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server as many are run: no AOF, no snapshots."""
    port = free_port()
    process = subprocess.Popen([find_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_ready(url, process, 30)
        yield url
    finally:
        process.kill()  # throwaway data
        process.wait(10)


async def problems_of(url: str) -> list[str]:
    client = connect(url, RedisSettings())
    try:
        return await redis_durability.problems(client)
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_each_setting_is_named(volatile_redis: str) -> None:
    admin = redis.Redis.from_url(volatile_redis, decode_responses=True)
    assert await problems_of(volatile_redis) == ["appendonly is 'no', needs 'yes'",
                                                 "appendfsync is 'everysec', needs 'always'"]
    admin.config_set("appendonly", "yes")
    admin.config_set("appendfsync", "always")
    assert await problems_of(volatile_redis) == []
    admin.config_set("maxmemory-policy", "allkeys-lru")
    assert await problems_of(volatile_redis) == ["maxmemory-policy is 'allkeys-lru', needs 'noeviction'"]
    admin.close()


@pytest.mark.anyio
async def test_config_get_refused_is_a_refusal_naming_require_durable(volatile_redis: str) -> None:
    admin = redis.Redis.from_url(volatile_redis, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "walletd", "on", ">pw", "~*", "&*", "+@all", "-config")
    admin.close()
    url = volatile_redis.replace("redis://", "redis://walletd:pw@")
    client = connect(url, RedisSettings())
    try:
        with pytest.raises(redis_durability.NotDurable) as refused:
            await redis_durability.check(client, require_durable=True)
    finally:
        await client.aclose()
    assert "CONFIG GET refused" in str(refused.value) and "require_durable = false" in str(refused.value)


@pytest.mark.anyio
async def test_require_durable_false_warns(volatile_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    client = connect(volatile_redis, RedisSettings())
    try:
        await redis_durability.check(client, require_durable=False)
    finally:
        await client.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "appendonly is 'no'" in warnings[0]


def test_serve_refuses_a_redis_without_aof(tmp_path: Path, volatile_redis: str) -> None:
    result = Server(tmp_path, volatile_redis).refused()
    assert result.returncode == EXIT_STARTUP
    assert "Traceback" not in result.stdout + result.stderr
    assert "appendonly is 'no'" in result.stderr and "require_durable" in result.stderr
    # ... and starts with require_durable = false, warning at start.
    server = Server(tmp_path / "lax", volatile_redis, redis_extra="require_durable = false\n").start()
    server.stop()
    assert "Redis is not durable" in server.log.read_text()
