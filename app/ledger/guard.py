"""The cold-start guard: walletd serves nothing while Redis is behind the ledger store.

Entry ids are "<partition>:<seq>", seq counted in Redis (Keys.seq). A Redis that
lost its AOF, was truncated, or is another one counts again from below the store's
highest seq: its entries would reuse ids the store holds (never storable, its
balances wrong). So every serving process (each HTTP worker, the flush process)
compares the two at start and every RECHECK_S. While a partition's counter is
below the store's highest seq, or `walletd rebuild` is writing Redis, callbacks
and admin writes are refused and the process writes nothing to Redis or the store;
once rebuild is done it serves again by itself. Redis ahead of the store is normal
(entries not flushed yet).

The hot path reads `ColdStart.refusal`, a plain attribute ('' while serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from app.errors import WalletUnavailable
from app.keys import META_PARTITIONS, META_REBUILD_RUNNING, Keys
from app.ledger import LedgerStore, StoreUnavailable
from app.redis_client import RedisClient

log = logging.getLogger("walletd.guard")

# How often the comparison runs again: a walletd refusing serves again this soon after
# `walletd rebuild` ends, and one serving stops this soon after its Redis lost its data.
RECHECK_S = 1.0
# A check that took long (thousands of partitions, a slow store) is followed by a pause of
# this many times its duration, so the guard never takes more than ~1/11 of a thread.
CHECK_COST_SHARE = 10
# Seq counters read per pipelined round trip: Redis serves no other client while it
# works through one client's pipeline, so 16,384 partitions are read in slices.
SEQ_READ_CHUNK = 1000
# The refusal before the first comparison has run (no callback arrives before start-up).
STARTING = "walletd is starting"
# The refusals whose kind is fixed: rebuild at work (META_REBUILD_RUNNING), and rebuild done
# while the store cannot be read to confirm that Redis caught up.
REBUILDING = ("Redis is marked as being rebuilt from the ledger store (`walletd rebuild` is running, or "
              "stopped before it finished: see its output, run it again)")
REBUILT_UNCONFIRMED = "`walletd rebuild` has ended but the ledger store cannot be read to compare it with Redis"
# Who refuses what, in the log line of each kind of process (ColdStart.watch).
SERVER_ROLE = "walletd refuses every callback and admin write"
FLUSHER_ROLE = "the flusher and the StarGame reconciler wait"


class RedisLook(msgspec.Struct, frozen=True):
    """What one check read from Redis."""

    written: list[int]  # per partition: entries written (the seq counter; 0 when absent)
    holds_meta: bool  # whether the meta hash exists (walletd has started on this Redis)
    rebuilding: bool


def stored_seqs(store: LedgerStore, partitions: int) -> list[int]:
    """The store's highest seq per partition: one indexed MAX per partition, not a scan
    of the table (GROUP BY reads every entry)."""
    return [store.seq_max(partition) for partition in range(partitions)]


async def written_seqs(redis: RedisClient, keys: Keys) -> list[int]:
    """How many ledger entries Redis has written, per partition, in a few pipelined
    round trips (SEQ_READ_CHUNK counters each), not one per partition."""
    written: list[int] = []
    for start in range(0, keys.partitions, SEQ_READ_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for partition in range(start, min(start + SEQ_READ_CHUNK, keys.partitions)):
                pipe.get(keys.seq(partition))
            written += [int(value or 0) for value in await pipe.execute()]
    assert len(written) == keys.partitions
    return written


async def look_at_redis(redis: RedisClient, keys: Keys) -> RedisLook:
    meta = await redis.hmget(keys.meta(), [META_PARTITIONS, META_REBUILD_RUNNING])
    written = await written_seqs(redis, keys)
    return RedisLook(written, holds_meta=meta[0] is not None, rebuilding=meta[1] is not None)


def behind_problems(written: list[int], stored: list[int]) -> list[str]:
    """Partitions whose Redis has written fewer entries than the store holds."""
    assert len(written) == len(stored)
    return [f"partition {partition}: Redis has written {redis_seq} ledger entries, the ledger store holds {store_seq}"
            for partition, (redis_seq, store_seq) in enumerate(zip(written, stored, strict=True))
            if redis_seq < store_seq]


def verdict(look: RedisLook, stored: list[int] | None, previous: str) -> str:
    """Why walletd must refuse now ('' = serve). stored None: the store could not be
    read, so Redis's word is taken (it is the durability point; the store may be down)
    and the previous verdict stands, unless Redis holds no walletd data at all: a new
    deployment and a Redis that lost everything look alike without the store."""
    if look.rebuilding:
        return REBUILDING
    if stored is None:
        if not look.holds_meta and not any(look.written):
            return ("Redis holds no walletd data and the ledger store cannot be read: a new deployment "
                    "cannot be told from a Redis that lost its data")
        return REBUILT_UNCONFIRMED if previous == REBUILDING else previous
    problems = behind_problems(look.written, stored)
    if not problems:
        return ""
    if not any(look.written):
        return (f"Redis holds no ledger entry counters (its data was lost?) while the ledger store holds "
                f"entries in {len(problems)} partition(s), up to seq {max(stored)}")
    more = f" and {len(problems) - 1} more partition(s)" if len(problems) > 1 else ""
    return f"Redis is behind the ledger store ({problems[0]}{more}): its data was lost or truncated"


def kind_of(reason: str) -> str:
    """A reason without its numbers: the log says when the kind changes, not each count."""
    return reason.split(" (", 1)[0].split(":", 1)[0]


class ColdStart:
    """read_store: the store's highest seq per partition (sync: it runs off the event
    loop); prepare: what start-up writes to Redis (the meta hash, the scripts), run
    only once Redis is not behind, again after each time it was."""

    def __init__(self, redis: RedisClient, keys: Keys, read_store: Callable[[int], list[int]],
                 prepare: Callable[[], Awaitable[None]], command: str) -> None:
        self.redis = redis
        self.keys = keys
        self.read_store = read_store
        self.prepare = prepare
        self.command = command  # what the operator runs to restore Redis
        self.refusal = STARTING  # read by every callback: '' = serve
        self.confirming: asyncio.Future[None] | None = None  # confirm()'s comparison under way
        self.reason = ""  # the last verdict ('' = Redis not behind)
        self.prepared = False
        self.store_problem = ""  # the store's last read failure, logged when it starts and ends
        self.pause_s = RECHECK_S
        self.role = ""  # set by watch(): who logs what it refuses
        self.should_exit = False
        self.wake = asyncio.Event()
        self.suspicions = 0  # restarts the hot path saw (suspect()): a look older than one is stale

    async def check(self) -> None:
        """Compare once. Redis's errors leave (the caller keeps its last verdict)."""
        started_s, suspicions = time.monotonic(), self.suspicions
        # The store first: the flusher stores only what Redis wrote before, so a store read
        # before Redis's can never be ahead of it (read after, it can: a false 'behind').
        stored = await self.stored()
        look = await look_at_redis(self.redis, self.keys)
        self.pause_s = max(RECHECK_S, CHECK_COST_SHARE * (time.monotonic() - started_s))
        reason = verdict(look, stored, self.reason)
        self.announce(reason)
        self.reason = reason
        if reason:
            self.refusal, self.prepared = reason, False
            return
        if not self.prepared:
            try:
                await self.prepare()  # while it runs callbacks are still refused
            except Exception as exc:
                self.refusal = f"walletd could not prepare Redis after it caught up: {exc}"
                raise
            self.prepared = True
        if self.suspicions == suspicions:  # else Redis restarted after it was read: look again
            self.refusal = ""

    async def stored(self) -> list[int] | None:
        try:
            stored = await asyncio.to_thread(self.read_store, self.keys.partitions)
        except (StoreUnavailable, OSError) as exc:
            if not self.store_problem:
                log.warning("cannot read the ledger store to compare sequences with Redis (%s): Redis's word "
                            "is taken; trying again every %.0f s", exc, RECHECK_S)
            self.store_problem = str(exc) or type(exc).__name__
            return None
        if self.store_problem:
            log.info("the ledger store can be read again: sequences compared")
            self.store_problem = ""
        return stored

    def announce(self, reason: str) -> None:
        """One line when refusing starts (with what to run), when its kind changes, and
        when serving resumes; nothing before watch() names the role (CLI commands)."""
        if not self.role or kind_of(reason) == kind_of(self.reason):
            return
        if not reason:
            log.info("Redis is not behind the ledger store (any more): %s", "serving again"
                     if self.role == SERVER_ROLE else "the flusher and the StarGame reconciler run again")
        elif reason == REBUILDING or self.role != SERVER_ROLE:
            log.warning("%s: %s", self.role, reason)  # the server's line names what to run
        else:
            log.error("%s: %s; to restore Redis from the ledger store run: %s", self.role, reason, self.command)

    async def confirm(self) -> None:
        """Compare now, not at the next re-check: Redis lost its script cache, so it
        restarted, maybe without its data (app/scripts.py). Every caller meanwhile shares
        one comparison; a failed one leaves the last verdict. Raises WalletUnavailable
        (nothing was sent) if walletd must refuse."""
        if self.confirming is None or self.confirming.done():
            self.confirming = asyncio.ensure_future(self.check())
        with contextlib.suppress(Exception):
            await asyncio.shield(self.confirming)
        if self.refusal:
            raise WalletUnavailable(f"{self.refusal}; the script was not sent")

    async def watch(self, role: str) -> None:
        """Compare every pause_s until stop(). A failed comparison (Redis down, the
        preparation failing) keeps the last verdict, is logged once per streak and
        tried again."""
        assert role in (SERVER_ROLE, FLUSHER_ROLE), role
        self.role = role
        reason, self.reason = self.reason, ""
        self.announce(reason)  # the verdict of the start-up check
        self.reason = reason
        failing = False
        while not self.should_exit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.pause_s)
            if self.should_exit:
                return
            self.wake.clear()  # woken by suspect(): compare now
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - the guard keeps watching whatever fails
                if not failing:
                    log.warning("comparing Redis with the ledger store failed (%s: %s); the last verdict stands "
                                "and it is tried again", type(exc).__name__, exc)
                failing = True
            else:
                failing = False

    def suspect(self) -> None:
        """The hot path's client found Redis restarted: it may have lost its data. Callbacks
        are refused until a comparison, run at once, says Redis is not behind."""
        if not self.refusal:
            self.refusal = "Redis restarted: comparing it with the ledger store"
        self.suspicions += 1
        self.wake.set()

    def stop(self) -> None:
        self.should_exit = True
        self.wake.set()
