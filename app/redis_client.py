"""The Redis client, configured so that a booking is never silently re-sent,
and its errors in app/errors.py's terms for the protocols."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from app.errors import ConnectionFailed, OutcomeUnknown, WalletCallError, WalletRefused, WalletUnavailable
from app.redis_pipe import PipelinedRedis
from app.scripts import ScriptClient
from app.settings import RedisSettings

# Enough for the hot path's concurrency on one worker. Past it, callers wait
# for a free connection (bounded by the socket time-out) instead of opening
# unbounded sockets.
POOL_CONNECTIONS_MAX = 64


def connect(url: str, settings: RedisSettings) -> Redis:
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


def script_client(url: str, settings: RedisSettings, redis: Redis) -> ScriptClient:
    """Who runs the Lua scripts on the hot path (redis.script_client)."""
    if settings.script_client == "redis-py":
        return redis
    return PipelinedRedis(url, settings.socket_timeout_ms / 1000, settings.connect_timeout_ms / 1000)


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
    except RedisError as exc:
        raise WalletUnavailable(str(exc)) from exc
