"""The hot path's Redis client: one connection, concurrent calls written in one batch.

redis-py checks a connection out of a pool, writes, and reads one reply per
call; at a few thousand calls a second that bookkeeping, not Redis, is what
costs CPU. Here every call appends its RESP command to a buffer that is
written once per event-loop turn, and replies are matched to callers in order
(Redis answers one connection's commands in the order they came). hiredis
parses the replies, in C.

Like the redis-py client it replaces on the hot path, it never re-sends a
command: a time-out or a lost connection is an error whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

# Calls in flight on the one connection. Past it callers get an error at once
# instead of queueing without bound behind a stalled Redis.
PENDING_MAX = 10_000
WATCHDOG_INTERVAL_S = 0.05


class RedisPipeError(ResponseError):
    """An error reply from Redis (hiredis builds it; NOSCRIPT is told apart below)."""


def encode_command(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        assert isinstance(arg, bytes), f"Redis arguments are str, int or bytes, not {type(arg).__name__}"
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class Call:
    __slots__ = ("future", "sent_at")

    def __init__(self, future: asyncio.Future, sent_at: float) -> None:
        self.future = future
        self.sent_at = sent_at


class Protocol(asyncio.Protocol):
    def __init__(self, client: PipelinedRedis) -> None:
        self.client = client
        self.reader = hiredis.Reader(encoding="utf-8", replyError=RedisPipeError)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.client.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            call = pending.popleft()
            if call.future.done():
                continue  # timed out earlier; its late reply is dropped
            if isinstance(reply, RedisPipeError):
                call.future.set_exception(error_of(reply))
            else:
                call.future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(exc)


def error_of(reply: RedisPipeError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class PipelinedRedis:
    """evalsha/eval/execute with the same call shape and errors as redis-py's asyncio client."""

    def __init__(self, url: str, timeout_s: float, connect_timeout_s: float) -> None:
        options = parse_url(url)
        self.path = options.get("path")  # unix:// URLs
        self.host = options.get("host", "127.0.0.1")
        self.port = options.get("port", 6379)
        self.hello = [("AUTH", options["password"])] if options.get("password") else []
        if options.get("db"):
            self.hello.append(("SELECT", options["db"]))
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.pending: collections.deque[Call] = collections.deque()
        self.buffer: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVAL", script, numkeys, *keys_and_args)

    async def execute(self, *args: Any) -> Any:
        if self.transport is None:
            await self.connect()
        return await self.send(encode_command(args))

    def send(self, command: bytes) -> asyncio.Future:
        if len(self.pending) >= PENDING_MAX:
            raise RedisConnectionError(f"{PENDING_MAX} Redis calls already in flight")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append(Call(future, time.monotonic()))
        if not self.buffer:
            loop.call_soon(self.flush)
        self.buffer.append(command)
        return future

    def flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self.buffer.clear()  # lost() failed their calls already
            return
        self.transport.write(b"".join(self.buffer))
        self.buffer.clear()

    async def connect(self) -> None:
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._connect())
        connecting = self.connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if self.connecting is connecting and connecting.done():
                self.connecting = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.path:
            opening = loop.create_unix_connection(lambda: Protocol(self), self.path)
        else:
            opening = loop.create_connection(lambda: Protocol(self), self.host, self.port)
        try:
            transport, _ = await asyncio.wait_for(opening, self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            where = self.path or f"{self.host}:{self.port}"
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        self.transport = transport
        if self.watchdog is None:
            self.watchdog = loop.call_later(WATCHDOG_INTERVAL_S, self.check_timeouts)
        for command in self.hello:
            await self.send(encode_command(command))

    def check_timeouts(self) -> None:
        """Fails calls older than the time-out; their replies are dropped when they come."""
        expired = time.monotonic() - self.timeout_s
        for call in self.pending:
            if call.sent_at > expired:
                break
            if not call.future.done():
                call.future.set_exception(RedisTimeout("Timeout reading from Redis"))
        self.watchdog = asyncio.get_running_loop().call_later(WATCHDOG_INTERVAL_S, self.check_timeouts)

    def lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = RedisConnectionError(f"connection to Redis lost: {exc}")
        while self.pending:
            call = self.pending.popleft()
            if not call.future.done():
                call.future.set_exception(error)
        self.buffer.clear()

    async def aclose(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
