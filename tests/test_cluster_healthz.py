"""GET /healthz on Redis Cluster: a primary that does not answer leaves the other
partitions serving, so the instance stays 200 and says which primary is missing (a
503 would take every instance out of a load balancer at once, each sees the same
node down); 503 only when no primary answers; 200 "ok" again once the node is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.redis_cluster import local_cluster
from tests.support import serving

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# A restarted primary is compared with the ledger store before it books again (the guard).
RECOVERY_S = 10.0


def settings_for(url: str, directory: Path) -> Settings:
    settings = Settings(data_dir=str(directory / "var"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{directory / 'ledger.db'}"
    settings.wallet.partitions = 16
    settings.flusher.enabled = False
    settings.metrics.enabled = False
    return settings


async def eventually_ok(client: httpx.AsyncClient) -> bool:
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline:
        r = await client.get("/healthz")
        if (r.status_code, r.text) == (200, "ok"):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_healthz_on_a_cluster_names_a_primary_down_and_fails_only_with_none(tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster", primaries=3) as cluster:
        async with serving(settings_for(cluster.url, tmp_path)) as client:
            ok = await client.get("/healthz")
            assert (ok.status_code, ok.text) == (200, "ok")

            victim = cluster.primaries[2]
            cluster.kill(victim)
            degraded = await client.get("/healthz")
            assert degraded.status_code == 200, degraded.text
            assert f"primary 127.0.0.1:{victim.port} does not answer" in degraded.text
            assert "its partitions are refused" in degraded.text

            cluster.restart(victim)  # its first call is refused until the guard has compared
            assert await eventually_ok(client), (await client.get("/healthz")).text

            for node in cluster.primaries:
                cluster.kill(node)
            down = await client.get("/healthz")
            assert down.status_code == 503, down.text
