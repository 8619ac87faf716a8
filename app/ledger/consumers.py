"""The flusher's consumer name: one per walletd instance, stable across its restarts, leased.

Every flusher (one per `walletd serve`, however many instances share a Redis or a cluster)
reads the partition streams through one consumer group (app/ledger/flusher.py): Redis
delivers each entry to one consumer, a restarted flusher first re-reads what is still
pending to its name, and entries pending to a consumer idle past claim_idle_ms are
claimed by another. So each instance's name must be
- stable across its restarts: derived from what identifies it, the host name and the
  data_dir (one serve per data_dir on a host: app/instance.py), never a pid; the port is
  left out, so moving an instance to another port keeps its pending entries its own;
- its own: two instances under one name re-read and acknowledge each other's pending
  entries (stored once all the same, the store skips an identical repeat, but a dead twin
  cannot be told from a live one, and the work is done twice). An explicit
  `[flusher] consumer` can repeat by mistake, so each name is held by a lease: a key
  whose value names the holder's host, boot and data_dir, with a TTL the flusher renews.
  A serve whose name another instance holds refuses to start; a flusher that finds it
  taken later stores nothing until it is free. The holder's own restarts find their
  own identity there and carry on at once.
Consumers of instances gone for good are removed from the group once they have no
pending entry and have been idle an hour (prune), so the group does not grow forever.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path
from typing import Any

from app.keys import Keys
from app.redis_client import RedisClient
from app.settings import Settings

log = logging.getLogger("walletd.flusher")

# A lease lapses this long after its holder's last renewal (a dead instance's name is
# free again after it). Long enough that a flusher stalled on its store keeps it (it
# renews between tries, which are at most retry_backoff_max_ms apart).
LEASE_TTL_MS = 30_000
# The flusher renews its lease this often: a few renewals per TTL, so one slow round
# trip does not let it lapse.
LEASE_RENEW_S = 5.0
# Where the kernel names this boot: tells two hosts (or containers on two hosts) that
# share a host name apart; containers on one host share it, like their data.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# A consumer with no pending entry idle this long is removed from the group: far past
# any pause of a live flusher (it reads every tick, retries at most retry_backoff_max_ms
# apart), and harmless if it returns (XREADGROUP creates it again).
DEAD_CONSUMER_IDLE_MS = 3_600_000
# Per prune round, at most this many removals (the rest wait for the next round).
PRUNE_MAX = 1_000

# The check and the removal in one script: a consumer that read entries between an
# XINFO and an XGROUP DELCONSUMER would lose them from the pending list (never stored,
# and trimmed once older than the group's other pending entries). XINFO's idle is since
# the consumer's last attempt to read, so an alive flusher's is a tick or so. Run again
# (a retried call) it removes nothing more: harmless.
# KEYS: the stream; ARGV: group, consumer, minimum idle ms. Returns 1 if removed, else 0.
PRUNE_SCRIPT = """
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['name'] == ARGV[2] then
    if fields['pending'] == 0 and fields['idle'] >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()[:8]
    except OSError:
        return "unknown"


def identity(data_dir: Path) -> str:
    """What tells this instance from any other sharing the Redis: the lease's value."""
    return f"host={socket.gethostname()} boot={boot_id()} data_dir={data_dir}"


def consumer_name(settings: Settings) -> str:
    """[flusher] consumer, else flusher-<host name>-<8 hex digits of the data_dir>."""
    if settings.flusher.consumer:
        return settings.flusher.consumer
    host = socket.gethostname()
    digest = hashlib.sha256(str(settings.data_path).encode()).hexdigest()[:8]
    return f"flusher-{host}-{digest}"


class Lease:
    """The consumer name's lease in Redis (one key, so on a cluster its owner node)."""

    def __init__(self, redis: RedisClient, consumer: str, data_dir: Path) -> None:
        self.redis = redis
        self.consumer = consumer
        self.key = Keys.consumer_lease(consumer)
        self.identity = identity(data_dir)

    async def hold(self) -> str | None:
        """Take the lease or renew ours: None, or the other holder's identity.
        The renewal is a GET then a PEXPIRE, not atomic: if ours lapsed in between and
        another took it, the PEXPIRE only prolongs theirs (the next hold() sees them)."""
        for _ in range(2):  # a lease that lapses between SET NX and GET: once more
            if await self.redis.set(self.key, self.identity, nx=True, px=LEASE_TTL_MS):
                return None
            holder = await self.redis.get(self.key)
            if holder == self.identity:
                await self.redis.pexpire(self.key, LEASE_TTL_MS)
                return None
            if holder is not None:
                return str(holder)
        return None if await self.redis.set(self.key, self.identity, nx=True, px=LEASE_TTL_MS) else "unknown"

    async def holder(self) -> str | None:
        """Another instance holding the lease now (its identity), else None; writes nothing."""
        holder = await self.redis.get(self.key)
        return None if holder is None or holder == self.identity else str(holder)

    async def release(self) -> None:
        """Free the name at a clean stop: another instance may take it over at once."""
        if await self.redis.get(self.key) == self.identity:
            await self.redis.delete(self.key)

    def refusal(self, holder: str) -> str:
        return (f"flusher consumer {self.consumer!r} is held by another walletd instance ({holder}); "
                f"this one is {self.identity}: give each instance its own [flusher] consumer (or leave it "
                f"empty: derived from the host name and data_dir). An instance that stopped frees it "
                f"within {LEASE_TTL_MS // 1000} s")


async def prune(redis: RedisClient, streams: list[str], group: str, keep: str) -> list[str]:
    """Remove consumers with no pending entry idle DEAD_CONSUMER_IDLE_MS from every
    stream's group (never `keep`, the caller's own); the names removed."""
    reads = redis.pipeline(transaction=False)
    for stream in streams:
        reads.xinfo_consumers(stream, group)
    candidates = [(stream, consumer["name"])
                  for stream, consumers in zip(streams, await reads.execute(), strict=True)
                  for consumer in consumers if is_dead(consumer, keep)]
    removed = []
    for stream, name in candidates[:PRUNE_MAX]:
        if await redis.eval(PRUNE_SCRIPT, 1, stream, group, name, DEAD_CONSUMER_IDLE_MS):
            removed.append(name)
    if removed:
        log.info("flusher: removed %d idle consumer(s) with nothing pending from the group: %s",
                 len(removed), ", ".join(sorted(set(removed))))
    return removed


def is_dead(consumer: dict[str, Any], keep: str) -> bool:
    return (consumer["name"] != keep and int(consumer["pending"]) == 0
            and int(consumer["idle"]) >= DEAD_CONSUMER_IDLE_MS)
