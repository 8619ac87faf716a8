"""The Redis client, configured so that a booking is never silently re-sent,
and its errors in app/errors.py's terms for the protocols.

On Redis Cluster (README "Scaling out") connect() returns redis-py's cluster client
for everything but the hot path's scripts (those go through app/redis_cluster_pipe.py,
which never re-sends one). What that client still repeats, and why it is harmless:

- MOVED, ASK and TRYAGAIN (a slot moved or moving, keys being migrated): the command
  did not run on the node that answered so, and is sent once to the one named. Its
  CLUSTER SLOTS refresh after MOVED and CLUSTERDOWN closes connections, re-sends nothing.
- nothing else: its outer retry (connection errors, time-outs, CLUSTERDOWN) is set to
  zero attempts, as the standalone client's. A time-out means the outcome is unknown
  (a SET NX alias claim that did run would be answered "taken" when re-sent, a script
  could book twice), and each caller already copes with a failed call: the flusher
  re-reads its pending entries, the guard keeps its last verdict, a command reports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from app.errors import ConnectionFailed, OutcomeUnknown, WalletCallError, WalletRefused, WalletUnavailable
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.redis_pipe import PipelinedRedis, redacted
from app.scripts import ScriptClient
from app.settings import ConfigError, RedisSettings

# Enough for the hot path's concurrency on one worker. Past it, callers wait
# for a free connection (bounded by the socket time-out) instead of opening
# unbounded sockets.
POOL_CONNECTIONS_MAX = 64


class ClusterClient(RedisCluster):
    """redis-py's cluster client, but a cluster it cannot reach at all is a connection
    error (redis-py raises RedisClusterException, which is no RedisError, so callers
    that handle a Redis outage would see a crash instead)."""

    async def initialize(self, *args: object, **kwargs: object) -> ClusterClient:
        try:
            await super().initialize(*args, **kwargs)  # type: ignore[arg-type]
        except RedisClusterException as exc:
            raise RedisConnectionError(str(exc)) from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError):
            await self.forget_map()
            raise

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def execute_then_forget(*args: Any, **kwargs: Any) -> Any:
            try:
                return await execute(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError):
                await self.forget_map()
                raise

        pipe.execute = execute_then_forget  # type: ignore[method-assign]
        return pipe

    async def forget_map(self) -> None:
        """After a node did not answer (never re-sent: no retries), the slot map is read
        again on the next command: a hung primary (its connection open, no MOVED ever) may
        have been replaced by its promoted replica. redis-py re-reads it only when it
        retries, and without that kept sending the guard's and the flusher's reads to the
        hung node after the failover (tests/test_redis_cluster_pipe.py)."""
        await self.aclose()


# Either client: annotations name this where a standalone or a cluster client may come.
RedisClient = Redis | RedisCluster


def connect(url: str, settings: RedisSettings, cluster: bool = False) -> RedisClient:
    """redis-py's client for redis.url: a standalone one, or on a cluster (the caller has
    resolved redis.cluster, app/redis_topology.py) one that routes each command by slot."""
    if cluster:
        return connect_cluster(url, settings)
    # redis-py retries on connection errors and time-outs by default. A retried
    # EVALSHA whose first attempt did run books twice (StarGame has no
    # transaction id to deduplicate), and a retry past the platform's budget is
    # useless anyway: zero retries, and a time-out is an "outcome unknown" error.
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        socket_timeout=settings.socket_timeout_ms / 1000,
        socket_connect_timeout=settings.connect_timeout_ms / 1000,
        max_connections=POOL_CONNECTIONS_MAX,
        timeout=settings.socket_timeout_ms / 1000,
        health_check_interval=0,
    )
    return Redis.from_pool(pool)


def connect_cluster(url: str, settings: RedisSettings) -> ClusterClient:
    """The cluster client: url names any node; the others are learned from it (CLUSTER
    SLOTS) on the first command, not here. See the module docstring for its retries."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"redis.url {redacted(url)!r}: a Redis Cluster is reached by redis:// or rediss:// "
                          f"(its nodes are named by address), not {parts.scheme}://")
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"redis.url {redacted(url)!r}: a Redis Cluster has only db 0; remove the "
                          f"/{parts.path.strip('/')} from the URL")
    client = ClusterClient.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=settings.socket_timeout_ms / 1000,
        socket_connect_timeout=settings.connect_timeout_ms / 1000,
        # Per node. redis-py's cluster pool does not wait for a free connection: past it a
        # command fails at once (MaxConnectionsError, a ConnectionError). Only commands,
        # the flusher and the admin API use this client; the hot path's scripts do not.
        max_connections=POOL_CONNECTIONS_MAX,
        # One primary down must not stop the others' partitions (nor the start-up).
        require_full_coverage=False,
        health_check_interval=0,
    )
    assert isinstance(client, ClusterClient), "from_url builds its own class"
    return client


def script_client(url: str, settings: RedisSettings, redis: RedisClient, cluster: bool = False) -> ScriptClient:
    """Who runs the Lua scripts on the hot path (redis.script_client). On Redis Cluster
    always the cluster client, whatever the setting: redis-py's cluster client retries
    calls whose outcome is unknown, and scripts must never be re-sent."""
    if cluster:
        return ClusterPipelinedRedis(url, settings.socket_timeout_ms / 1000, settings.connect_timeout_ms / 1000,
                                     replica_acks=settings.replica_acks,
                                     replica_ack_timeout_ms=settings.replica_ack_timeout_ms)
    if settings.script_client == "redis-py":
        assert not settings.replica_acks, "settings refuse replica_acks without the pipelined client"
        return redis
    return PipelinedRedis(url, settings.socket_timeout_ms / 1000, settings.connect_timeout_ms / 1000,
                          replica_acks=settings.replica_acks, replica_ack_timeout_ms=settings.replica_ack_timeout_ms)


# redis-py types every reply as bytes | str: it cannot know that connect() sets
# decode_responses=True. These narrow a reply of such a client, checking it.
def text(reply: bytes | str) -> str:
    assert isinstance(reply, str), "a client made by connect() decodes replies"
    return reply


def optional_text(reply: bytes | str | None) -> str | None:
    return None if reply is None else text(reply)


def text_map(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(key): text(value) for key, value in reply.items()}


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """redis-py's exceptions from its own commands (GET, HGET...; scripts convert theirs
    in app/scripts.py) as app/errors.py's kinds, so a protocol maps them to its answers.
    The text stays redis-py's."""
    try:
        yield
    except WalletCallError:
        raise
    except ResponseError as exc:
        raise WalletRefused(str(exc)) from exc
    except RedisTimeoutError as exc:
        raise OutcomeUnknown(str(exc)) from exc
    except RedisConnectionError as exc:
        raise ConnectionFailed(str(exc)) from exc
    except (RedisError, RedisClusterException) as exc:  # the latter: a cluster's slot not covered
        raise WalletUnavailable(str(exc)) from exc
