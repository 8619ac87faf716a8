"""Whether the hot path reaches Redis, as its calls find out, and when to try again.

An outage fails every callback the same way; the log says so once when the
first call finds Redis unreachable and once when a call is answered again
(with how long it lasted), instead of one line per request or per minute.
While Redis is unreachable, connect attempts are spaced by a backoff that
doubles up to a cap: one attempt in flight per client (app/redis_pipe.py),
a few per second at most, and the cap keeps walletd serving again within
that long of Redis answering.
"""

from __future__ import annotations

import contextvars
import logging
import time

log = logging.getLogger("walletd.redis")

# The first retry after a failed connect: a refused connect costs ~0.1 ms, so soon.
BACKOFF_MIN_S = 0.01
# Attempts stay this close while Redis is away: at most ~10 a second per client, and
# walletd serves again at most this long after Redis answers (README "Outages").
BACKOFF_MAX_S = 0.1


# When the current callback must have its answer (wall clock, ms; None outside a
# callback): a call waiting for a connect gives up then, unsent, instead of holding the
# answer for the whole connect time-out (a Redis host that drops packets). Set by each
# protocol's handler; asyncio gives every request task its own copy.
CALL_DEADLINE_MS: contextvars.ContextVar[int | None] = contextvars.ContextVar("call_deadline_ms", default=None)


def wait_left_s(longest_s: float) -> float:
    """How long the current call may wait for a connect: longest_s, or less to its deadline."""
    deadline_ms = CALL_DEADLINE_MS.get()
    if deadline_ms is None:
        return longest_s
    return max(0.0, min(longest_s, deadline_ms / 1000 - time.time()))


class RedisLink:
    def __init__(self, where: str) -> None:
        self.where = where
        self.down_since: float | None = None  # time.monotonic() of the first failure of this outage
        self.failures = 0  # failed connect attempts in a row
        self.next_try = 0.0  # no connect attempt before this (time.monotonic())
        self.refused = 0  # calls failed during this outage (for the "back" line)
        self.last_failure = ""  # why the last connect attempt failed (calls refused meanwhile say it)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def may_connect(self) -> bool:
        return time.monotonic() >= self.next_try

    def wait_s(self) -> float:
        return max(0.0, self.next_try - time.monotonic())

    def connect_failed(self, why: str) -> None:
        """A connect (or its handshake) failed: back off, and say so if this starts an outage."""
        now = time.monotonic()
        self.failures += 1
        self.last_failure = why
        self.next_try = now + min(BACKOFF_MIN_S * 2 ** min(self.failures - 1, 16), BACKOFF_MAX_S)
        self.unavailable(why)

    def unavailable(self, why: str) -> None:
        """Redis cannot run calls now (unreachable, or loading its data after a restart)."""
        self.refused += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("Redis at %s unavailable (%s): callbacks are refused unbooked (OIA OP_50, StarGame fail) "
                      "until it answers; walletd reconnects by itself (next line when it is back)", self.where, why)

    def count_refusal(self) -> None:
        """A call failed at once because the backoff allows no connect attempt yet."""
        self.refused += 1

    def answered(self) -> None:
        """A call was answered: the outage, if any, is over."""
        self.failures = 0
        self.next_try = 0.0
        if self.down_since is not None:
            log.warning("Redis at %s answers again after %.1f s (%d calls refused meanwhile); callbacks are served",
                        self.where, time.monotonic() - self.down_since, self.refused)
            self.down_since = None
        self.refused = 0  # (refusals outside an outage, at a call's deadline, the protocols log)
