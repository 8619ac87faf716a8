"""An open-loop HTTP/1.1 load: requests are due at a fixed rate whether or not
earlier ones have been answered, and each latency is measured from the moment
the request was due (as wrk2 does), so a stalled server shows as queueing
instead of as fewer requests.

Due requests go out on idle keep-alive connections; when none is idle they wait
in the client and that wait counts. The client checks for due requests on
every response and on a timer; how late it sent them is reported apart
(send_lag), so its own share of the numbers is visible.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import msgspec

SETTLE_TIMEOUT_S = 5.0  # answers still missing this long after the last send count as errors
PUMP_EVERY_S = 0.001
SLOW_US = 50_000  # answers slower than the platforms' budget are kept with their times
SLOW_KEPT_MAX = 200_000  # bounded: an overloaded step has as many slow answers as answers


class Result(msgspec.Struct):
    rate: float  # offered requests/s
    sent: int
    answered: int
    errors: int
    latencies_us: list[int]  # of answered, measured (warm-up excluded)
    send_lag_us: list[int]
    window: tuple[float, float]  # CLOCK_MONOTONIC: first and last measured request's due time
    slow: list[tuple[float, float]]  # (due, answered) of measured answers over SLOW_US


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line[15:])
    return 0


class Connection(asyncio.Protocol):
    def __init__(self, load: OpenLoop) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0  # when the request in flight was due; 0 when idle
        self.measured = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] - uvloop's is not an asyncio.Transport subclass

    def send(self, request: bytes, due: float, measured: bool) -> None:
        assert self.transport is not None and not self.due
        self.due, self.measured = due, measured
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).lower()
        length = content_length(head)
        if len(self.buffer) < head_end + 4 + length:
            return
        body = bytes(self.buffer[head_end + 4:head_end + 4 + length])
        ok = head.startswith(b"http/1.1 200") and self.load.expect in body
        del self.buffer[:head_end + 4 + length]
        self.load.answered(self, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.due:
            self.load.answered(self, False)
        elif self in self.load.idle:
            self.load.idle.remove(self)


class OpenLoop:
    def __init__(self, host: str, port: int, make_request: Callable[[], bytes], expect: bytes,
                 connections: int) -> None:
        self.host, self.port = host, port
        self.make_request = make_request
        self.expect = expect
        self.connections_max = connections
        # Round robin, so no connection idles past the server's keep-alive time-out.
        self.idle: collections.deque[Connection] = collections.deque()
        self.waiting: collections.deque[tuple[float, bool]] = collections.deque()
        self.latencies: list[int] = []
        self.lags: list[int] = []
        self.slow: list[tuple[float, float]] = []
        self.errors = 0
        self.in_flight = 0
        self.next_index = 0
        self.start = 0.0
        self.interval = 0.0
        self.total = 0
        self.warmup = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections_max):
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
            self.idle.append(conn)

    def answered(self, conn: Connection, ok: bool) -> None:
        now = time.perf_counter()
        if conn.measured:
            if ok:
                latency_us = int((now - conn.due) * 1e6)
                self.latencies.append(latency_us)
                if latency_us > SLOW_US and len(self.slow) < SLOW_KEPT_MAX:
                    self.slow.append((conn.due, now))
            else:
                self.errors += 1
        conn.due = 0.0
        self.in_flight -= 1
        if conn.transport is not None:
            self.idle.append(conn)
        self.pump()

    def pump(self) -> None:
        """Sends every request that is due, oldest first, while a connection is idle."""
        now = time.perf_counter()
        while self.next_index < self.total:
            due = self.start + self.next_index * self.interval
            if due > now:
                break
            self.waiting.append((due, self.next_index >= self.warmup))
            self.next_index += 1
        while self.waiting and self.idle:
            due, measured = self.waiting.popleft()
            if measured:
                self.lags.append(int((now - due) * 1e6))
            self.in_flight += 1
            self.idle.popleft().send(self.make_request(), due, measured)

    async def run(self, rate: float, duration_s: float, warmup_s: float) -> Result:
        assert rate > 0 and duration_s > 0
        self.latencies, self.lags, self.slow, self.errors = [], [], [], 0
        self.interval = 1.0 / rate
        self.warmup = int(warmup_s * rate)
        self.total = self.warmup + int(duration_s * rate)
        self.next_index = 0
        self.start = time.perf_counter()
        while self.next_index < self.total:
            self.pump()
            # Not shorter: a busier loop would take the core from redis-server.
            # Responses pump too, so under load sends are rarely this late.
            await asyncio.sleep(PUMP_EVERY_S)
        deadline = time.perf_counter() + SETTLE_TIMEOUT_S
        while (self.in_flight or self.waiting) and time.perf_counter() < deadline:
            self.pump()
            await asyncio.sleep(PUMP_EVERY_S)
        lost = self.in_flight + len(self.waiting)
        measured = self.total - self.warmup
        window = (self.start + self.warmup * self.interval, self.start + (self.total - 1) * self.interval)
        return Result(rate, measured, len(self.latencies), self.errors + lost, self.latencies, self.lags, window,
                      self.slow)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
