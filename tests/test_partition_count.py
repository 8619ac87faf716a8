"""The partition count's default (256) against a Redis written with another count: an
upgraded deployment that never set it is refused at start with the exact fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app import cli
from app.keys import META_PARTITIONS, Keys
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import WalletError
from tests.process import Server

pytestmark = pytest.mark.anyio


async def test_a_redis_of_16_partitions_is_refused_naming_the_setting(settings: Settings,
                                                                      sync_redis: redis.Redis) -> None:
    sync_redis.hset(Keys.meta(), META_PARTITIONS, "16")  # written by a walletd of the old default
    assert settings.wallet.partitions == 256
    with pytest.raises(WalletError) as refused:
        async with Runtime(settings, settings.redis.url):
            pass
    assert "Redis holds data for 16 partitions but wallet.partitions is 256" in str(refused.value)
    assert "set [wallet] partitions = 16 in the config" in str(refused.value)
    assert sync_redis.hget(Keys.meta(), META_PARTITIONS) == "16"  # nothing rewritten


async def test_the_old_count_set_explicitly_starts(settings: Settings, sync_redis: redis.Redis) -> None:
    sync_redis.hset(Keys.meta(), META_PARTITIONS, "16")
    settings.wallet.partitions = 16
    async with Runtime(settings, settings.redis.url) as runtime:
        assert runtime.wallet.keys.partitions == 16


@pytest.mark.slow
def test_serve_refuses_to_start_on_an_old_default_deployment_saying_what_to_set(
        tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    sync_redis.hset(Keys.meta(), META_PARTITIONS, "16")
    refused = Server(tmp_path, redis_url).refused()
    assert refused.returncode == cli.EXIT_USAGE, refused.stdout + refused.stderr
    assert "set [wallet] partitions = 16 in the config" in refused.stderr
    assert "Traceback" not in refused.stderr
