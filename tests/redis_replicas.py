"""Test helper: a private Redis primary with one replica (`--replicaof`), both AOF
`appendfsync always`, from the binary the embedded mode uses; the replica can be
paused (SIGSTOP) and resumed, so that it stops confirming writes (WAIT)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.redis_servers import PrivateRedis

# Both nodes: durable as walletd requires of a primary (README "Durability").
AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
# The primary: a replica's first sync starts at once (7.0 waits 5 s for more replicas by
# default), and WAIT's time-out is honoured within 10 ms (hz 100; README "Scaling out").
PRIMARY = (*AOF_ALWAYS, "--repl-diskless-sync-delay", "0", "--hz", "100")
# Generous: two cores shared by many sessions.
SYNC_WAIT_S = 30.0
# A replica that confirms a write within this long is taken as following the primary.
PROMPT_ACK_MS = 200
# The key wait_synced writes (and deletes) on the primary for its WAIT.
PROBE_KEY = "tests:replication-probe"


class ReplicatedRedis:
    def __init__(self, directory: Path) -> None:
        self.primary = PrivateRedis(directory / "primary", extra=PRIMARY)
        self.replica = PrivateRedis(directory / "replica", extra=AOF_ALWAYS)

    @property
    def url(self) -> str:
        return self.primary.admin_url

    def start(self) -> ReplicatedRedis:
        self.primary.start()
        self.replica.extra = (*AOF_ALWAYS, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        self.wait_synced()
        return self

    def stop(self) -> None:
        self.resume()
        self.replica.stop()
        self.primary.stop()

    def client(self, node: PrivateRedis) -> redis.Redis:
        return redis.Redis.from_url(node.admin_url, decode_responses=True)

    def wait_synced(self) -> None:
        """Until the replica has every write the primary has, and confirms a new one at
        once: for about a second after a (re)sync, observed on 7.0, a replica confirms only
        with its once-a-second ACK, and a WAIT meanwhile takes up to that second."""
        deadline = time.monotonic() + SYNC_WAIT_S
        with contextlib.closing(self.client(self.primary)) as primary:
            while time.monotonic() < deadline:
                primary.set(PROBE_KEY, "1")  # a write for the WAIT to cover, removed again
                primary.delete(PROBE_KEY)
                if primary.execute_command("WAIT", 1, PROMPT_ACK_MS) == 1:
                    return
        raise TimeoutError(f"the replica did not sync within {SYNC_WAIT_S:g} s")

    def pause(self) -> None:
        """The replica stops reading the replication stream (and confirming)."""
        assert self.replica.process is not None
        os.kill(self.replica.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.replica.process is not None and self.replica.process.poll() is None:
            os.kill(self.replica.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def replicated_redis(directory: Path) -> Iterator[ReplicatedRedis]:
    pair = ReplicatedRedis(directory)
    try:
        yield pair.start()
    finally:
        pair.stop()
