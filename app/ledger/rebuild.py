"""`walletd rebuild`: Redis restored from the ledger store after its data was lost
(README "Rebuild").

Only partitions whose Redis has written fewer entries than the store holds are
rebuilt (every partition holding entries while an earlier run's flag is still set);
a Redis ahead of the store (entries not flushed yet) and behind it in no partition is
refused before anything is written; partitions ahead are left to the flusher. Each such partition's entries are read in
seq order, READ_BATCH at a time, turned into writes by app/ledger/restore.py and sent
in one script call per batch that first checks the partition's seq counter: a walletd
booking in the partition meanwhile stops the rebuild instead of being overwritten.
The seq counter is the partition's last write, so an interrupted run resumes where
it stopped; the meta field rebuild_running, set first and deleted last, keeps the
cold-start guard refusing callbacks until every partition is back.

What the script writes: only keys of its partition, all in the partition's hash slot
(KEYS[1], its seq counter, routes it to the slot's primary on Redis Cluster, which
refuses a script touching another slot). The batch's other writes, alias keys
(`w:alias:...`, each in a slot of its own), are sent before it as plain commands
(pipelined; on a cluster to each key's primary); like every write here they are
absolute, so a batch whose script is then refused, or a run cut off between the two,
leaves nothing a second run does not write the same. The meta hash (`w:meta`) is
written alone, before the first partition and after the last. A Redis node that fails
meanwhile stops the run with RebuildRefused saying so: a second run resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from redis.exceptions import RedisClusterException, RedisError

from app.keys import META_FILTER_LAYOUT, META_FILTER_SINCE, META_PARTITIONS, META_REBUILD_RUNNING, PREFIX, Keys
from app.ledger import LedgerStore, PartitionStats
from app.ledger.guard import written_seqs
from app.ledger.restore import Restore
from app.redis_client import RedisClient, optional_text
from app.settings import Settings
from app.wallet import partitions_mismatch

# Entries read from the store per query and written to Redis per transaction: bounded
# memory and transaction size (a few thousand commands), few round trips.
READ_BATCH = 2_000
# A batch's writes, applied in one script call if the partition's seq counter is unchanged
# (a booking meanwhile raised it): atomic like MULTI/EXEC, and one command of three
# arguments to send (the writes as one JSON array, which Redis's cjson decodes) instead of
# one per write: redis-py packing and reading each write of a MULTI took three quarters
# of a rebuild's time. The keys it writes are not declared (thousands a batch); all are
# in KEYS[1]'s slot (write() sends the others outside), which is what Redis Cluster needs.
# KEYS[1] the seq counter; ARGV[1] the count it must still hold; ARGV[2] the writes,
# [[command, arg, ...], ...]. Returns nil when applied, else the counter (nothing written).
APPLY_LUA = """
local written = redis.call('GET', KEYS[1]) or '0'
if written ~= ARGV[1] then return written end
for _, command in ipairs(cjson.decode(ARGV[2])) do redis.call(unpack(command)) end
return nil
"""
# Alias keys (app/keys.py Keys.alias): each hashes to a slot of its own, not its player's partition's.
ALIAS_PREFIX = f"{PREFIX}:alias:"
# Entries read from the start of each partition to find a player's (an agent's are not
# placed by Keys.partition): the first is nearly always a player's 'open'.
MISPLACED_READ = 16
# A progress line at most this often (and one when done): readable, not a flood.
PROGRESS_INTERVAL_S = 1.0


class RebuildRefused(Exception):
    """Rebuild stopped before writing (or, for a walletd writing meanwhile, before
    writing more): the message says why and what to do."""


class Summary(msgspec.Struct):
    partitions: int = 0  # rebuilt
    entries: int = 0  # read from the store
    players: int = 0  # accounts restored
    problems: list[str] = msgspec.field(default_factory=list)


class Progress:
    def __init__(self, report: Callable[[str], None], total: int) -> None:
        self.report, self.total = report, total
        self.started = self.last = time.monotonic()
        self.summary = Summary()

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= PROGRESS_INTERVAL_S:
            s = self.summary
            self.report(f"rebuild: {s.partitions}/{self.total} partitions, {s.entries} entries read, "
                        f"{s.players} players, {now - self.started:.1f} s")
            self.last = now


async def rebuild(redis: RedisClient, store: LedgerStore, settings: Settings, report: Callable[[str], None]) -> Summary:
    keys = Keys(settings.wallet.partitions)
    behind, ahead = await partitions_behind(redis, keys, store)
    progress = Progress(report, len(behind))
    for line in ahead:
        report(f"rebuild: {line}: not flushed yet, left to the flusher")
    if not behind:
        report("rebuild: Redis is not behind the ledger store in any partition; nothing to do")
        return progress.summary
    now_ms = int(time.time() * 1000)
    await mark_started(redis, keys, settings, now_ms)
    for partition, (written, stored) in sorted(behind.items()):
        restore = Restore(keys, store, partition, now_ms, settings.oia.retention_s * 1000,
                          settings.stargame.request_retention_s * 1000)
        try:
            await rebuild_partition(redis, store, restore, written, stored, progress)
        except (RedisError, RedisClusterException) as exc:  # the latter: a slot no node serves
            raise RebuildRefused(interrupted(partition, progress, exc)) from exc
    progress.show(final=True)
    if not progress.summary.problems:
        await redis.hdel(keys.meta(), META_REBUILD_RUNNING)
    return progress.summary


async def partitions_behind(redis: RedisClient, keys: Keys, store: LedgerStore
                            ) -> tuple[dict[int, tuple[int, int]], list[str]]:
    """partition -> (entries Redis has written, the store's seq_max), for each partition
    to rebuild: Redis is behind in it, or an earlier rebuild did not finish; and the
    partitions Redis is ahead in. Refuses a Redis ahead of the store and behind it
    nowhere, or of another partition count."""
    meta = keys.meta()
    stored_partitions = optional_text(await redis.hget(meta, META_PARTITIONS))
    if stored_partitions not in (None, str(keys.partitions)):
        raise RebuildRefused(partitions_mismatch(stored_partitions, keys.partitions))
    stats = store.partition_stats()
    if stats and max(stats) >= keys.partitions:
        raise RebuildRefused(f"the ledger store holds partition {max(stats)}, wallet.partitions is "
                             f"{keys.partitions}: set it to the count that wrote the store")
    if misplaced := misplaced_player(store, keys, stats):
        raise RebuildRefused(misplaced)
    # A run that did not finish (or found problems) left the flag: its partitions may look
    # level, so every partition holding entries is done again.
    unfinished = await redis.hexists(meta, META_REBUILD_RUNNING)
    behind = {}
    ahead = []
    for partition, written in enumerate(await written_seqs(redis, keys)):
        stored = stats[partition].seq_max if partition in stats else 0
        if written > stored:
            ahead.append(f"partition {partition}: Redis has written {written} entries, the store holds {stored}")
        elif written < stored or (unfinished and stored > 0):
            behind[partition] = (written, stored)
    # Ahead in some partitions and behind in others is an AOF cut at an instant: partitions
    # whose flusher lagged hold entries the store lacks, ones flushed later lost some. The
    # guard refuses (the flusher waits) until the behind ones are rebuilt, so they must be;
    # the ahead ones are whole as they are (their keys are theirs alone), left to the flusher.
    if ahead and not behind:
        raise RebuildRefused(f"Redis is ahead of the ledger store ({ahead[0]}"
                             f"{f' and {len(ahead) - 1} more partitions' if len(ahead) > 1 else ''}): "
                             f"entries are not flushed yet; run `walletd flush` (or serve) until the backlog "
                             f"drains and `walletd verify` passes; Redis then needs no rebuild")
    return behind, ahead


def misplaced_player(store: LedgerStore, keys: Keys, stats: dict[int, PartitionStats]) -> str | None:
    """A store written with fewer partitions than wallet.partitions (the default was 16
    before it became 256) holds each player in a partition other than ours: refused here,
    before anything is written to Redis (Restore's own check comes after mark_started has
    recorded our count in Redis: then neither count would be let in without editing Redis).
    The first player entry of each partition tells (one read each)."""
    for partition in sorted(stats):
        for entry in store.read(partition, 0, MISPLACED_READ):
            if entry.account_kind or not entry.player_id:
                continue
            if keys.partition(entry.player_id) != partition:
                return (f"the ledger store holds player {entry.player_id} in partition {partition}, but with "
                        f"wallet.partitions = {keys.partitions} that player is in partition "
                        f"{keys.partition(entry.player_id)}: the store was written with another partition "
                        f"count; set [wallet] partitions to it (16 for a deployment made before the "
                        f"default became 256) and run `walletd rebuild` again. Nothing was written to Redis")
            break  # one player entry per partition tells
    return None


async def mark_started(redis: RedisClient, keys: Keys, settings: Settings, now_ms: int) -> None:
    """Redis counts as behind until the flag goes; bookings the lost Redis filtered left
    no bits, so every transaction_timestamp before now is looked up in the store."""
    layout = f"{settings.oia.filter_generation_s}:{settings.oia.filter_bits}"
    await redis.hset(keys.meta(), mapping={
        META_REBUILD_RUNNING: str(now_ms), META_PARTITIONS: str(keys.partitions),
        META_FILTER_SINCE: str(now_ms // 1000), META_FILTER_LAYOUT: layout})


async def rebuild_partition(redis: RedisClient, store: LedgerStore, restore: Restore, written: int, stored: int,
                            progress: Progress) -> None:
    after = 0
    while after < stored:
        # Entries past `stored` (a flusher storing meanwhile) wait for the next run.
        batch = [entry for entry in store.read(restore.partition, after, READ_BATCH) if entry.seq <= stored]
        if not batch:
            break  # a gap up to seq_max: the store lacks entries (verify reports it)
        for entry in batch:
            restore.apply(entry)
        after = batch[-1].seq
        progress.summary.entries += len(batch)
        if after < stored:
            await write(redis, restore, written, restore.take())
            progress.show()
    await write(redis, restore, written, [*restore.finish(), ("SET", restore.keys.seq(restore.partition), str(stored))])
    progress.summary.partitions += 1
    progress.summary.players += len(restore.accounts)
    progress.summary.problems += restore.problems
    progress.show()


async def write(redis: RedisClient, restore: Restore, written: int, commands: list[tuple[str, ...]]) -> None:
    """The batch's keys of other slots first (aliases), then one script call with the
    partition's own, applied only if the partition's seq counter is still `written`."""
    own, elsewhere = by_slot(restore.keys.tag(restore.partition), commands)
    if elsewhere:
        async with redis.pipeline(transaction=False) as pipe:
            for command in elsewhere:
                pipe.execute_command(*command)
            await pipe.execute()
    batch = msgspec.json.encode(own)
    moved = await redis.eval(APPLY_LUA, 1, restore.keys.seq(restore.partition), str(written), batch)
    if moved is not None:
        raise RebuildRefused(concurrent(restore.partition, written, int(moved)))


def by_slot(tag: str, commands: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The commands on the partition's keys (tag), in order, and the others: alias keys,
    the only ones app/ledger/restore.py writes outside the partition."""
    own, elsewhere = [], []
    for command in commands:
        if command[1].startswith(f"{tag}:"):
            own.append(command)
        else:
            assert command[1].startswith(ALIAS_PREFIX), f"restore wrote {command[1]!r} outside its partition"
            elsewhere.append(command)
    return own, elsewhere


def interrupted(partition: int, progress: Progress, exc: Exception) -> str:
    done = progress.summary.partitions
    return (f"Redis failed while partition {partition} was written ({type(exc).__name__}: {exc}) after "
            f"{done}/{progress.total} partitions: Redis stays marked as being rebuilt (walletd refuses "
            f"callbacks); once every Redis node is reachable, run `walletd rebuild` again: it resumes")


def concurrent(partition: int, written: int, now: int) -> str:
    return (f"partition {partition}'s seq counter moved from {written} to {now} during the rebuild: "
            f"something is writing to this Redis (a walletd serving?); stop it, then run `walletd rebuild` again")
