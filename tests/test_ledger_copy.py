"""walletd ledger copy (app/ledger/copy.py): the destination ends equal to the source,
a second run copies nothing, an interrupted one resumes, another ledger in the
destination is refused with nothing of the batch stored. Run over each pair of
stores in PAIRS; both stores are read only through the LedgerStore interface."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from app.ledger import LedgerConflict, LedgerStore, PartitionStats, copy as ledger_copy, open_store
from app.ledger.copy import CopyRefused, copy_ledger, differences, refuse_unusable, store_identity
from tests.ledgers import entry_of, fill, sample_ledger, whole

# (source, destination): the embedded default into itself's kind, the migration it is for
# (SQLite -> PostgreSQL) and back.
PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgresql"), ("postgresql", "sqlite")]
LEDGER = {0: 40, 3: 57, 15: 9}  # partition -> entries: a few batches, uneven partitions
BATCH = 7  # small, so every partition takes several batches


def quiet(line: str) -> None:
    """A copy's progress lines, where a test does not look at them."""


@pytest.fixture(params=PAIRS, ids="-to-".join)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LedgerStore, LedgerStore]]:
    def empty(kind: str, label: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / label / 'ledger.db'}"
        return str(request.getfixturevalue(f"{kind}_url"))

    source_kind, destination_kind = request.param
    source = open_store(empty(source_kind, "source"))
    destination = open_store(empty(destination_kind, "destination"))
    yield source, destination
    source.close()
    destination.close()


def test_the_destination_ends_equal_to_the_source(stores: tuple[LedgerStore, LedgerStore]) -> None:
    source, destination = stores
    fill(source, sample_ledger(LEDGER))
    report: list[str] = []
    copied = copy_ledger(source, destination, BATCH, report.append)
    assert copied.partitions == LEDGER and copied.total == sum(LEDGER.values())
    assert whole(destination) == whole(source)  # every field, profiles included
    assert differences(source, destination) == []
    assert [line.split(":")[0] for line in report] == [f"partition {p}" for p in sorted(LEDGER)]
    assert report[-1] == f"partition 15: 9 entries copied (after seq 0); total {sum(LEDGER.values())}"


def test_a_second_run_copies_nothing(stores: tuple[LedgerStore, LedgerStore]) -> None:
    source, destination = stores
    fill(source, sample_ledger(LEDGER))
    copy_ledger(source, destination, BATCH, quiet)
    again = copy_ledger(source, destination, BATCH, quiet)
    assert again.partitions == {} and again.total == 0
    assert whole(destination) == whole(source)


def test_a_copy_made_while_the_source_grew_is_completed_by_the_next_run(
    stores: tuple[LedgerStore, LedgerStore]
) -> None:
    """Copy while walletd runs, then a last pass after stopping it."""
    source, destination = stores
    fill(source, sample_ledger({0: 20, 3: 30}))
    copy_ledger(source, destination, BATCH, quiet)
    fill(source, sample_ledger({0: 33}, first_seq=21) + sample_ledger({9: 4}))  # partition 3 unchanged, 9 new
    behind = differences(source, destination)
    assert behind[:2] == ["partition 0: the source holds 33 entries up to seq 33, the destination 20 up to seq 20",
                          "partition 9: the source holds 4 entries up to seq 4, the destination 0 up to seq 0"]
    assert "player p9.3: sum 10000 in the source, absent in the destination" in behind
    last = copy_ledger(source, destination, BATCH, quiet)
    assert last.partitions == {0: 13, 9: 4}
    assert whole(destination) == whole(source)
    assert differences(source, destination) == []


def test_an_interrupted_copy_resumes_after_the_batches_it_committed(
    stores: tuple[LedgerStore, LedgerStore]
) -> None:
    """What a killed copy leaves: whole batches, each partition a prefix in seq order."""
    source, destination = stores
    entries = sample_ledger(LEDGER)
    fill(source, entries)
    fill(destination, [e for e in entries if (e.partition, e.seq) <= (3, 2 * BATCH)], batch=BATCH)
    resumed = copy_ledger(source, destination, BATCH, quiet)
    assert resumed.partitions == {3: LEDGER[3] - 2 * BATCH, 15: LEDGER[15]}
    assert whole(destination) == whole(source)


def test_a_destination_with_a_gap_is_filled_from_the_start(stores: tuple[LedgerStore, LedgerStore]) -> None:
    """Only a copy stores into the destination, in seq order, but a gap (entries
    deleted by hand) must not be skipped over: identical entries are re-inserted as no-ops."""
    source, destination = stores
    fill(source, sample_ledger({3: 20}))
    destination.insert([entry_of(3, seq) for seq in (1, 2, 3, 12)])
    assert copy_ledger(source, destination, BATCH, quiet).partitions == {3: 16}
    assert whole(destination) == whole(source)


def test_an_entry_held_with_other_content_stops_the_copy_and_its_batch_stores_nothing(
    stores: tuple[LedgerStore, LedgerStore]
) -> None:
    source, destination = stores
    fill(source, sample_ledger({2: 5, 3: 20}))
    other = msgspec.structs.replace(entry_of(3, 10), amount_minor=-999_999)  # another Redis's 3:10
    # Gaps below 15 (its last entry, the source's): partition 3 is copied again from seq 1.
    destination.insert([entry_of(3, 1), other, entry_of(3, 15)])
    with pytest.raises(LedgerConflict, match=r"ledger entry 3:10 is in the destination with other content.*"
                                             r"seq 8..14\) was stored and the copy stopped"):
        copy_ledger(source, destination, BATCH, quiet)
    # partition 2 went first and is complete; 3 got its first batch (1..7), not the one holding 3:10
    assert destination.partition_stats() == {2: PartitionStats(5, 5), 3: PartitionStats(9, 15)}
    assert [e.seq for e in whole(destination)[3]] == [1, 2, 3, 4, 5, 6, 7, 10, 15]
    assert whole(destination)[3][7] == other


@pytest.mark.parametrize("change", [{"amount_minor": 1}, {"ts_ms": 1}, {"fp": "other"}, {"round_id": "other"}],
                         ids=lambda change: next(iter(change)))
def test_a_last_entry_held_otherwise_refuses_the_partition(
    stores: tuple[LedgerStore, LedgerStore], change: dict
) -> None:
    """Where a resume would start: the destination's last entry must be the source's in
    every field (the insert's own check compares the money fields only)."""
    source, destination = stores
    fill(source, sample_ledger({3: 20}))
    destination.insert([entry_of(3, seq) for seq in range(1, 7)] + [msgspec.structs.replace(entry_of(3, 7), **change)])
    before = whole(destination)
    with pytest.raises(LedgerConflict, match="ledger entry 3:7 is in the destination with other content than in "
                                             "the source: the destination holds another ledger; nothing was copied"):
        copy_ledger(source, destination, BATCH, quiet)
    assert whole(destination) == before


def test_a_destination_ahead_of_the_source_is_another_ledger(stores: tuple[LedgerStore, LedgerStore]) -> None:
    source, destination = stores
    fill(source, sample_ledger({3: 5}))
    fill(destination, sample_ledger({3: 8}))
    with pytest.raises(LedgerConflict, match="ledger entry 3:8 is in the destination but not in the source"):
        copy_ledger(source, destination, BATCH, quiet)
    assert destination.partition_stats() == {3: PartitionStats(8, 8)}


def test_differences_name_partitions_and_players_the_copy_did_not_make_equal(
    stores: tuple[LedgerStore, LedgerStore]
) -> None:
    source, destination = stores
    fill(source, sample_ledger({1: 12}))
    fill(destination, sample_ledger({1: 12, 4: 1}))  # an extra partition: the copy leaves it alone
    destination_sums = destination.player_sums()
    assert copy_ledger(source, destination, BATCH, quiet).total == 0
    assert differences(source, destination) == [
        "partition 4: the source holds 0 entries up to seq 0, the destination 1 up to seq 1",
        f"player p4.0: sum absent in the source, {destination_sums['p4.0']} in the destination"]


def test_a_destination_holding_other_entries_with_the_same_counts_and_sums_is_not_equal(
    stores: tuple[LedgerStore, LedgerStore]
) -> None:
    """Counts, seq_max and sums are not the entries: another ledger (or a hand edit) with
    the same shape must not pass for a copy (here two journal entries and one bet's
    balance differ; no player's sum does)."""
    source, destination = stores
    entries = sample_ledger({3: 20})
    fill(source, entries)
    changed = {8: {"code": "OP_49"}, 11: {"round_id": "other"}, 12: {"balance_after_minor": 1}}
    fill(destination, [msgspec.structs.replace(e, **changed.get(e.seq, {})) for e in entries])
    assert destination.partition_stats() == source.partition_stats()
    assert destination.player_sums() == source.player_sums()
    assert copy_ledger(source, destination, BATCH, quiet).total == 0
    assert differences(source, destination) == [
        "partition 3: entry 3:8 differs between the source and the destination (the first of 3)"]


def test_the_entry_by_entry_comparison_pages_through_gaps_in_either_store(
    stores: tuple[LedgerStore, LedgerStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same count and seq_max, a gap at another seq in each (hand-deleted entries):
    pages of the two stores end at other seqs, and both gaps are found."""
    monkeypatch.setattr(ledger_copy, "COMPARE_BATCH", 4)
    source, destination = stores
    entries = sample_ledger({3: 20})
    fill(source, [e for e in entries if e.seq != 9])
    fill(destination, [e for e in entries if e.seq != 14])
    assert differences(source, destination) == [
        "partition 3: entry 3:9 differs between the source and the destination (the first of 2)",
        "player p3.4: sum 10038 in the source, 10047 in the destination"]  # 3:9 is a reverse of 9
    fill(destination, [entry_of(3, 14)])
    fill(source, [entry_of(3, 9)])
    assert differences(source, destination) == []


def test_an_empty_source_copies_nothing_and_is_equal(stores: tuple[LedgerStore, LedgerStore]) -> None:
    source, destination = stores
    assert copy_ledger(source, destination, BATCH, quiet).total == 0
    assert differences(source, destination) == []


@pytest.mark.parametrize(("a", "b"), [
    ("sqlite:///{d}/ledger.db", "sqlite:///{d}/x/../ledger.db"),
    ("sqlite:///{d}/ledger.db", "sqlite:///{d}/link.db"),
    ("postgresql://walletd:pw@localhost/walletd", "postgresql://other@127.0.0.1:5432/walletd"),
    ("postgresql://walletd@/walletd?host=/run/postgresql", "postgres://walletd:x@localhost/walletd"),
    ("postgresql://walletd@db.example:6432/ledger", "postgresql://walletd@db.example:6432/ledger?sslmode=require"),
    ("postgresql://walletd@db.example", "postgresql://walletd:pw@db.example/walletd"),  # dbname: the user's
])
def test_a_copy_onto_the_same_store_is_refused(tmp_path: Path, a: str, b: str) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "ledger.db").write_bytes(b"")
    (tmp_path / "link.db").symlink_to(tmp_path / "ledger.db")
    a, b = a.format(d=tmp_path), b.format(d=tmp_path)
    assert store_identity(a) == store_identity(b)
    with pytest.raises(CopyRefused, match="same ledger"):
        refuse_unusable(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("sqlite:///{d}/ledger.db", "sqlite:///{d}/other.db"),
    ("postgresql://walletd@localhost/walletd", "postgresql://walletd@localhost:5433/walletd"),
    ("postgresql://walletd@localhost/walletd", "postgresql://walletd@localhost/ledger"),
    ("postgresql://walletd@db1.example/walletd", "postgresql://walletd@db2.example/walletd"),
    ("sqlite:///{d}/ledger.db", "postgresql://walletd@localhost/walletd"),
])
def test_different_stores_are_told_apart(tmp_path: Path, a: str, b: str) -> None:
    (tmp_path / "ledger.db").write_bytes(b"")
    refuse_unusable(a.format(d=tmp_path), b.format(d=tmp_path))


def test_a_sqlite_source_that_does_not_exist_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "ledger.db"
    with pytest.raises(CopyRefused, match=f"--from: no ledger file at {missing}"):
        refuse_unusable(f"sqlite:///{missing}", f"sqlite:///{tmp_path / 'to.db'}")
    assert not missing.parent.exists()
