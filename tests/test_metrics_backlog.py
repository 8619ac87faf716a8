"""The ledger backlog and lag per partition as /metrics reads them from Redis
(app/metrics.py LedgerBacklog), with more partitions than one pipeline reads, and
with Redis gone: no samples, no error."""

from __future__ import annotations

import time

import pytest
import redis

from app.keys import Keys
from app.metrics import BACKLOG, LAG, READ_PARTITIONS_MAX, LedgerBacklog
from app.redis_client import connect
from app.redis_server import free_port
from app.settings import RedisSettings

pytestmark = pytest.mark.anyio

PARTITIONS = 2 * READ_PARTITIONS_MAX + 44  # three pipelines, the last one short
AGE_S = 5


async def test_each_partitions_backlog_and_lag_across_pipelines(redis_url: str, sync_redis: redis.Redis) -> None:
    keys = Keys(PARTITIONS)
    now_ms = int(time.time() * 1000)
    entries = {0: [now_ms], READ_PARTITIONS_MAX + 1: [now_ms - AGE_S * 1000, now_ms], PARTITIONS - 1: [now_ms]}
    for partition, ids in entries.items():
        for ms in ids:
            sync_redis.xadd(keys.ledger(partition), {"e": "1"}, id=f"{ms}-0")
    client = connect(redis_url, RedisSettings())  # walletd's own client
    try:
        backlog = LedgerBacklog(client, keys)
        await backlog.read()
    finally:
        await client.aclose()
    read = {int(partition): (length, lag) for partition, length, lag in backlog.latest}
    assert sorted(read) == list(range(PARTITIONS))
    assert {partition: length for partition, (length, _) in read.items() if length} == {
        partition: len(ids) for partition, ids in entries.items()}
    aged = read[READ_PARTITIONS_MAX + 1][1]
    assert AGE_S <= aged < AGE_S + 30
    assert all(lag < AGE_S for partition, (_, lag) in read.items() if partition != READ_PARTITIONS_MAX + 1)
    families = {family.name: family for family in backlog.collect()}
    assert len(families[BACKLOG].samples) == len(families[LAG].samples) == PARTITIONS


async def test_no_redis_no_samples_and_no_error() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}", RedisSettings())  # nothing listens there
    try:
        backlog = LedgerBacklog(client, Keys(PARTITIONS))
        backlog.latest = [("0", 7, 1.0)]  # a previous scrape's
        await backlog.read()
    finally:
        await client.aclose()
    assert backlog.latest == []
    assert [family.samples for family in backlog.collect()] == [[], []]
