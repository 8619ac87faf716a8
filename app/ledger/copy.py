"""walletd ledger copy: one ledger store's entries into another (SQLite -> PostgreSQL).

Per partition, in seq order, one destination transaction per batch: so the
destination's seq_max is always a point the copy reached, and the next run starts
after it (resumable). Entries the destination already holds identically are skipped
by insert() (idempotent); one it holds with other content raises LedgerConflict and
that batch stores nothing. At the end the two stores are compared (counts, seq_max
per partition, every player's sum).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from app.ledger import LedgerConflict, LedgerEntry, LedgerStore, PartitionStats

# Entries per read and per destination transaction: a few MB in memory, and a commit
# (one fsync) per batch costs little next to the rows.
BATCH_DEFAULT = 2_000
# One batch is one transaction held in memory (as settings.FLUSHER_BATCH_MAX for the flusher).
BATCH_MAX = 10_000
# A long partition reports its progress at most this often, so a big copy shows it is moving.
PROGRESS_EVERY_S = 2.0
# Entries per read when the result is compared entry by entry (both stores read alike).
COMPARE_BATCH = 5_000
# Player sums that differ are listed up to this many (then counted): the report stays readable.
SUMS_LISTED_MAX = 10
# Hosts that name this machine: the same port and database on two of them is one server.
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
POSTGRES_PORT = 5432  # libpq's default when a URL names none

Report = Callable[[str], None]  # where progress lines go: print in the CLI, a list in tests


class CopyRefused(Exception):
    """The copy cannot start: the stores are one, or the source does not exist."""


class Copied(msgspec.Struct):
    """What one run copied: entries per partition (only those that got some), and the time."""

    partitions: dict[int, int]
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


def store_identity(url: str) -> tuple[str, ...]:
    """What names one store: a SQLite file's real path; a PostgreSQL server's host
    (this machine's names as one), port and database. Other URLs: themselves."""
    if url.startswith("sqlite:///"):
        return ("sqlite", str(Path(url.removeprefix("sqlite:///")).resolve()))
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        host = parts.hostname or query.get("host", "")
        port = str(parts.port or query.get("port", POSTGRES_PORT))
        user = unquote(parts.username or "") or query.get("user", "")
        database = unquote(parts.path.lstrip("/")) or query.get("dbname", "") or user
        return ("postgresql", "local" if host in LOCAL_HOSTS or host.startswith("/") else host, port, database)
    return ("url", url)


def refuse_unusable(source_url: str, destination_url: str) -> None:
    """A copy onto itself, or from a SQLite file that does not exist (opening it would
    create an empty ledger and 'copy' nothing), is refused before anything is opened."""
    if store_identity(source_url) == store_identity(destination_url):
        raise CopyRefused("--from and --to name the same ledger store: nothing to copy")
    if source_url.startswith("sqlite:///"):
        path = Path(source_url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise CopyRefused(f"--from: no ledger file at {path}")
        to = destination_url.removeprefix("sqlite:///")
        if destination_url.startswith("sqlite:///") and Path(to).exists() and os.path.samefile(path, to):
            raise CopyRefused("--from and --to name the same ledger file: nothing to copy")


def resume_after(source: LedgerStore, destination: LedgerStore, partition: int, stored: PartitionStats) -> int:
    """Where the partition's copy resumes: after the destination's seq_max when its
    entries up to there are gap-free (a copy stores a prefix in seq order) and its last
    one is the source's, exactly. A gapped destination is copied again from the start
    (identical entries are skipped); one whose last entry the source lacks or holds
    otherwise is another ledger: LedgerConflict."""
    if stored.seq_max == 0:
        return 0
    theirs = destination.read(partition, stored.seq_max - 1, 1)
    ours = source.read(partition, stored.seq_max - 1, 1)
    assert theirs and theirs[0].seq == stored.seq_max, "the destination's seq_max names an entry it holds"
    if not ours or ours[0] != theirs[0]:
        same_seq = bool(ours) and ours[0].seq == stored.seq_max
        how = "with other content than in the source" if same_seq else "but not in the source"
        raise LedgerConflict(f"ledger entry {theirs[0].entry_id} is in the destination {how}: the destination "
                             f"holds another ledger; nothing was copied into partition {partition}")
    return stored.seq_max if stored.count == stored.seq_max else 0


def copy_partition(source: LedgerStore, destination: LedgerStore, partition: int, after: int, until: int,
                   batch: int, report: Report) -> int:
    """The source's entries with seq > after, up to (at least) seq until, in batches;
    how many were new to the destination."""
    copied, shown_s = 0, time.monotonic()
    # Each read advances past at least one seq: never more reads than seqs to go, batched.
    for _ in range((until - after) // batch + 2):
        entries: list[LedgerEntry] = source.read(partition, after, batch)
        if not entries:
            break
        assert entries[0].seq > after and all(e.partition == partition for e in entries)
        try:
            copied += destination.insert(entries)
        except LedgerConflict as exc:
            raise LedgerConflict(f"{first_conflict(destination, entries)} is in the destination with other "
                                 f"content: the destination holds another ledger; nothing of this batch "
                                 f"(partition {partition}, seq {entries[0].seq:,}..{entries[-1].seq:,}) was "
                                 f"stored and the copy stopped") from exc
        after = entries[-1].seq
        if time.monotonic() - shown_s >= PROGRESS_EVERY_S:
            report(f"partition {partition}: {copied:,} entries copied so far (up to seq {after:,} of {until:,})")
            shown_s = time.monotonic()
        if after >= until or len(entries) < batch:
            break
    return copied


def first_conflict(destination: LedgerStore, entries: list[LedgerEntry]) -> str:
    """The first of entries (one partition's, in seq order) the destination holds otherwise."""
    held = {e.entry_id: e for e in destination.read(entries[0].partition, entries[0].seq - 1, len(entries))}
    different = next((e for e in entries if e.entry_id in held and held[e.entry_id] != e), None)
    return f"ledger entry {different.entry_id}" if different is not None else "a ledger entry of the batch"


def copy_ledger(source: LedgerStore, destination: LedgerStore, batch: int, report: Report) -> Copied:
    """Every partition the source holds, each from where the destination stops.
    The source's entries at this call's start are copied (and any the source gains on
    the way, up to a batch); a later run copies what arrived since."""
    assert 1 <= batch <= BATCH_MAX
    started = time.monotonic()
    stored = destination.partition_stats()
    copied: dict[int, int] = {}
    running = 0
    for partition, stats in sorted(source.partition_stats().items()):
        held = stored.get(partition, PartitionStats(0, 0))
        if held == stats:
            continue  # already equal (a re-run): not even a read
        after = resume_after(source, destination, partition, held)
        count = copy_partition(source, destination, partition, after, stats.seq_max, batch, report)
        running += count
        copied[partition] = count
        report(f"partition {partition}: {count:,} entries copied (after seq {after:,}); total {running:,}")
    return Copied(copied, time.monotonic() - started)


def content_differences(source: LedgerStore, destination: LedgerStore, partition: int,
                        stats: PartitionStats) -> list[str]:
    """A partition both stores hold with the same count and seq_max, compared entry by entry
    (every field, profiles included): counts and sums alone pass another ledger of the
    same shape, or a hand-edited one, for a copy. One line naming the first difference."""
    after, first, different = 0, "", 0
    # Each round advances past at least one seq (or ends): bounded by the seqs, batched.
    for _ in range(stats.seq_max // COMPARE_BATCH + 2):
        ours = source.read(partition, after, COMPARE_BATCH)
        theirs = destination.read(partition, after, COMPARE_BATCH)
        # Up to where both reads are complete (a gap may be in one store only)
        ends = [page[-1].seq for page in (ours, theirs) if len(page) == COMPARE_BATCH]
        until = min(ends, default=stats.seq_max)
        mine = {e.seq: e for e in ours if e.seq <= until}
        held = {e.seq: e for e in theirs if e.seq <= until}
        for seq in sorted(mine.keys() | held.keys()):
            if mine.get(seq) != held.get(seq):
                first = first or f"{partition}:{seq}"
                different += 1
        if not ends:
            break
        after = until
    if not different:
        return []
    return [f"partition {partition}: entry {first} differs between the source and the destination "
            f"(the first of {different:,})"]


def differences(source: LedgerStore, destination: LedgerStore) -> list[str]:
    """What differs between the two stores: per partition count and seq_max, then (where
    those agree) every entry, and each player's sum of money entries. Empty when the
    destination equals the source."""
    ours, theirs = source.partition_stats(), destination.partition_stats()
    problems = []
    for partition in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(partition, PartitionStats(0, 0)), theirs.get(partition, PartitionStats(0, 0))
        if a != b:
            problems.append(f"partition {partition}: the source holds {a.count:,} entries up to seq {a.seq_max:,}, "
                            f"the destination {b.count:,} up to seq {b.seq_max:,}")
        else:
            problems += content_differences(source, destination, partition, a)
    sums, copied_sums = source.player_sums(), destination.player_sums()
    differing = sorted(player for player in sums.keys() | copied_sums.keys()
                       if sums.get(player) != copied_sums.get(player))
    for player in differing[:SUMS_LISTED_MAX]:
        problems.append(f"player {player}: sum {sums.get(player, 'absent')} in the source, "
                        f"{copied_sums.get(player, 'absent')} in the destination")
    if len(differing) > SUMS_LISTED_MAX:
        problems.append(f"... and {len(differing) - SUMS_LISTED_MAX:,} more players whose sums differ")
    return problems
