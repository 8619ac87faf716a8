"""The ledger store contract (app/ledger/__init__.py's LedgerStore), run over every store.

Each test gets a fresh, empty store of every kind in STORES: a store joins by its name
there, a `<name>_url` fixture giving an empty store's URL (it may use a server fixture of
its own), and a reader in PHYSICAL.
The tests read the store only through its interface (`open_store`, the LedgerStore
methods); the few that check what a store physically holds say so in their name and
read it through PHYSICAL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from app.ledger import (
    PROFILE_FIELDS,
    LedgerConflict,
    LedgerEntry,
    LedgerStore,
    PartitionStats,
    StoredEntry,
    TransferLegs,
    from_stream,
    open_store,
)
from app.ledger.sqlite import SqliteStore

MAX_MINOR = 2**53 - 1  # the largest amount walletd holds: stored and summed exactly, no float
BIG_BATCH = 1_207  # above any store's bound on ids per statement (SQLite checks 500 at a time)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'ledger.db'}"


def sqlite_players(url: str) -> dict[str, tuple[str, ...]]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        rows = db.execute("SELECT player_id, currency, country, language, name, aliases, operator FROM players")
        return {row[0]: row[1:] for row in rows}
    finally:
        db.close()


def postgresql_players(url: str) -> dict[str, tuple[str, ...]]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT player_id, currency, country, language, name, aliases, operator FROM players")
        return {row[0]: tuple(row[1:]) for row in rows}


# The postgresql_url fixture (tests/conftest.py): a fresh database on the session's server.
STORES = ["sqlite", "postgresql"]
# name -> the players' profiles as physically stored: (currency, country, language, name, aliases, operator).
PHYSICAL: dict[str, Callable[[str], dict[str, tuple[str, ...]]]] = {"sqlite": sqlite_players,
                                                                     "postgresql": postgresql_players}
assert set(STORES) == PHYSICAL.keys()


@pytest.fixture(params=STORES)
def store_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(store_name: str, request: pytest.FixtureRequest) -> str:
    """An empty store's URL, from the store's own `<name>_url` fixture."""
    return request.getfixturevalue(f"{store_name}_url")


@pytest.fixture
def store(store_url: str) -> Iterator[LedgerStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def entry(partition: int, seq: int, player: str = "611", kind: str = "bet", amount: int = -100,
          after: int = 9900, source: str = "oia", ref: str = "", fp: str = "") -> LedgerEntry:
    return LedgerEntry(f"{partition}:{seq}", partition, seq, player, kind, amount, after, source,
                       ref or f"testcasino|{partition}.{seq}", 1_700_000_000_000 + seq, fp=fp)


def opening(partition: int, seq: int, player: str, balance: int, operator: str = "testcasino") -> LedgerEntry:
    profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR", "country": "DE", "lang": "en",
                                                    "name": "John Doe", "op": operator}
    return msgspec.structs.replace(entry(partition, seq, player, "open", balance, balance, "admin", "open"),
                                   profile=profile)


def test_an_empty_store_holds_nothing(store: LedgerStore) -> None:
    assert store.player_sums() == {}
    assert store.partition_stats() == {}
    assert store.seq_max(0) == 0
    assert store.find("611", "oia", "testcasino|1") == []
    assert not store.holds_entries("oia")
    assert store.insert([]) == 0


def test_insert_returns_how_many_entries_were_new(store: LedgerStore) -> None:
    assert store.insert([entry(3, 1), entry(3, 2)]) == 2
    assert store.insert([entry(3, 2), entry(3, 3), entry(4, 1)]) == 2  # 3:2 was there
    assert store.partition_stats() == {3: PartitionStats(3, 3), 4: PartitionStats(1, 1)}


def test_a_batch_stored_again_after_a_crash_is_a_no_op_but_other_content_is_refused(store: LedgerStore) -> None:
    batch = [entry(3, 1, kind="deposit", amount=100, after=10100, source="admin", ref="before")]
    assert store.insert(batch) == 1
    assert store.insert(batch) == 0  # the flusher died between commit and XACK
    with pytest.raises(LedgerConflict, match="other content"):
        store.insert([msgspec.structs.replace(batch[0], amount_minor=7)])
    assert store.seq_max(3) == 1 and store.seq_max(4) == 0
    assert store.player_sums() == {"611": 100}


@pytest.mark.parametrize("change", [{"player_id": "612"}, {"kind": "win"}, {"amount_minor": -101},
                                    {"balance_after_minor": 9899}, {"ref": "testcasino|other"}],
                         ids=lambda change: next(iter(change)))
def test_an_id_stored_with_other_content_raises_and_the_whole_batch_stores_nothing(
    store: LedgerStore, change: dict
) -> None:
    stored = entry(3, 1)
    store.insert([stored])
    before = (store.player_sums(), store.partition_stats(), store.seq_max(5))
    new_ones = [entry(5, seq, player="p5") for seq in range(1, 4)]
    with pytest.raises(LedgerConflict):
        store.insert([*new_ones, msgspec.structs.replace(stored, **change)])
    assert (store.player_sums(), store.partition_stats(), store.seq_max(5)) == before
    assert store.insert(new_ones) == 3  # the store still works, and had stored none of them


def test_a_conflict_anywhere_in_a_batch_larger_than_one_check_is_found(store: LedgerStore) -> None:
    batch = [entry(1, seq) for seq in range(1, BIG_BATCH + 1)]
    assert store.insert(batch) == BIG_BATCH
    with pytest.raises(LedgerConflict):
        store.insert([*batch[:-1], msgspec.structs.replace(batch[-1], amount_minor=-1)])
    assert store.partition_stats() == {1: PartitionStats(BIG_BATCH, BIG_BATCH)}


def test_player_sums_add_every_entry_of_each_player_the_opening_balance_included(store: LedgerStore) -> None:
    store.insert([opening(1, 1, "a", 10_000), entry(1, 2, "a", "bet", -2_500, 7_500),
                  entry(1, 3, "a", "win", 1_000, 8_500), opening(2, 1, "b", 0),
                  entry(2, 2, "b", "deposit", MAX_MINOR, MAX_MINOR, "admin")])
    store.insert([entry(1, 4, "a", "refund", 2_500, 11_000)])
    assert store.player_sums() == {"a": 11_000, "b": MAX_MINOR}
    assert all(type(total) is int for total in store.player_sums().values())


def test_partition_stats_and_seq_max_follow_each_partition(store: LedgerStore) -> None:
    store.insert([entry(0, 1), entry(0, 2), entry(7, 5), entry(7, 9)])  # a gap is stored as it is
    assert store.partition_stats() == {0: PartitionStats(2, 2), 7: PartitionStats(2, 9)}
    assert [store.seq_max(p) for p in (0, 7, 8)] == [2, 9, 0]


def test_find_returns_one_players_entries_of_a_source_and_ref_oldest_first(store: LedgerStore) -> None:
    ref = "testcasino|42"
    store.insert([
        entry(2, 1, "611", "bet", -300, 9_700, ref=ref, fp="f1"),
        entry(2, 2, "611", "win", MAX_MINOR, MAX_MINOR, ref=ref, fp="f2"),
        entry(2, 3, "612", "refusal", 0, 9_700, ref=ref),  # another player (a booking would reuse the id)
        entry(2, 4, "611", "deposit", 5, 9_705, "admin", ref=ref),  # another source
        entry(2, 5, "611", "bet", -1, 9_704, ref="testcasino|43"),  # another ref
    ])
    assert store.find("611", "oia", ref) == [StoredEntry("bet", -300, 9_700, "f1"),
                                              StoredEntry("win", MAX_MINOR, MAX_MINOR, "f2")]
    assert store.find("611", "admin", ref) == [StoredEntry("deposit", 5, 9_705, "")]
    assert store.find("613", "oia", ref) == []


def test_holds_entries_tells_whether_a_source_has_any_entry(store: LedgerStore) -> None:
    store.insert([entry(1, 1, source="stargame")])
    assert store.holds_entries("stargame")
    assert not store.holds_entries("oia")
    assert not store.holds_entries("stargam")  # the whole source, not a prefix


def test_everything_stored_survives_close_and_reopen(store_url: str) -> None:
    batch = [opening(1, 1, "a", 500), entry(1, 2, "a", "bet", -200, 300, ref="r", fp="f"), entry(4, 1, "b")]
    first = open_store(store_url)
    try:
        assert first.insert(batch) == 3
    finally:
        first.close()
    again = open_store(store_url)
    try:
        assert again.player_sums() == {"a": 300, "b": -100}
        assert again.partition_stats() == {1: PartitionStats(2, 2), 4: PartitionStats(1, 1)}
        assert again.seq_max(1) == 2
        assert again.find("a", "oia", "r") == [StoredEntry("bet", -200, 300, "f")]
        assert again.holds_entries("admin")
        assert again.insert(batch) == 0  # known after the reopen too
        with pytest.raises(LedgerConflict):
            again.insert([msgspec.structs.replace(batch[2], amount_minor=1)])
    finally:
        again.close()


def test_physically_an_opening_entry_stores_the_players_profile_once(
    store: LedgerStore, store_name: str, store_url: str
) -> None:
    store.insert([opening(1, 1, "a", 500, operator="othercasino"), opening(2, 1, "b", 0, operator="")])
    store.insert([opening(1, 1, "a", 500, operator="othercasino")])  # flushed again: skipped
    assert PHYSICAL[store_name](store_url) == {
        "a": ("EUR", "DE", "en", "John Doe", "", "othercasino"),
        "b": ("EUR", "DE", "en", "John Doe", "", ""),
    }


# SQLite's own: files written by earlier walletd versions.

OLD_SCHEMA = """
CREATE TABLE ledger (
    entry_id TEXT PRIMARY KEY, partition INTEGER NOT NULL, seq INTEGER NOT NULL, player_id TEXT NOT NULL,
    kind TEXT NOT NULL, amount_minor INTEGER NOT NULL, balance_after_minor INTEGER NOT NULL,
    source TEXT NOT NULL, ref TEXT NOT NULL, ts_ms INTEGER NOT NULL, UNIQUE (partition, seq));
INSERT INTO ledger VALUES ('3:1', 3, 1, '611', 'win', 500, 10500, 'oia', 'testcasino|1', 1);
"""


def test_a_ledger_file_without_fingerprints_gets_the_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteStore(str(path))
    try:
        assert store.find("611", "oia", "testcasino|1") == [StoredEntry("win", 500, 10500, "")]
    finally:
        store.close()
    store = SqliteStore(str(path))  # a second open finds the column there
    store.close()


def test_read_gives_back_every_field_as_inserted_in_seq_order(store: LedgerStore) -> None:
    full = msgspec.structs.replace(entry(3, 2, fp="f"), operator="testcasino", currency="EUR", round_id="77",
                                   game_id="g1", round_finished="1")
    refusal = msgspec.structs.replace(entry(3, 3, kind="refusal", amount=0, after=9_900), code="OP_31",
                                      operator="testcasino", currency="EUR")
    batch = [opening(3, 1, "611", 10_000), full, refusal, entry(4, 1, player="x")]
    store.insert(batch)
    assert store.read(3, 0, 10) == batch[:3]
    assert store.read(3, 1, 1) == [full]
    assert store.read(3, 3, 10) == []
    assert store.read(4, 0, 10) == [batch[3]]


def test_find_shows_journal_entries_with_their_code(store: LedgerStore) -> None:
    refusal = msgspec.structs.replace(entry(1, 1, kind="refusal", amount=0, after=50, ref="op|9"), code="OP_31")
    tomb = entry(1, 2, kind="tombstone", amount=0, after=50, ref="op|10")
    store.insert([refusal, tomb])
    assert store.find("611", "oia", "op|9") == [StoredEntry("refusal", 0, 50, "", "OP_31")]
    assert store.find("611", "oia", "op|10") == [StoredEntry("tombstone", 0, 50, "", "")]


def test_player_sums_count_money_entries_only(store: LedgerStore) -> None:
    ghost = msgspec.structs.replace(entry(2, 1, player="ghost", kind="refusal", amount=0, after=0), code="OP_34")
    store.insert([opening(2, 2, "611", 700), ghost])
    assert store.player_sums() == {"611": 700}


# Transfers between accounts (docs/transfers.md): the legs, agents' accounts, pairing.

def leg(partition: int, seq: int, kind: str, transfer: str, amount: int, account: str = "a17",
        account_kind: str = "agent", counterparty: str = "player:611") -> LedgerEntry:
    return LedgerEntry(f"{partition}:{seq}", partition, seq, account, kind, amount, 10_000 + amount, "transfer",
                       transfer, 1_700_000_000_000 + seq, currency="EUR", account_kind=account_kind,
                       counterparty=counterparty)


def debit(partition: int, seq: int, transfer: str, amount: int) -> LedgerEntry:
    return leg(partition, seq, "transfer_out", transfer, -amount)


def credit(partition: int, seq: int, transfer: str, amount: int) -> LedgerEntry:
    return leg(partition, seq, "transfer_in", transfer, amount, "611", "", "agent:a17")


def test_transfer_legs_are_stored_and_read_back_with_their_account_and_counterparty(store: LedgerStore) -> None:
    legs = [debit(5, 1, "agent:a17|t1", 300), leg(5, 2, "transfer_reverse", "agent:a17|t2", 40),
            credit(9, 1, "agent:a17|t1", 300)]
    tomb = msgspec.structs.replace(credit(9, 2, "agent:a17|t2", 0), kind="tombstone", amount_minor=0)
    assert store.insert([*legs, tomb]) == 4
    assert store.read(5, 0, 10) == legs[:2]
    assert store.read(9, 0, 10) == [legs[2], tomb]
    assert store.read(5, 0, 10)[0].account_kind == "agent"
    assert store.read(9, 0, 1)[0].counterparty == "agent:a17"
    assert store.find("611", "transfer", "agent:a17|t1") == [StoredEntry("transfer_in", 300, 10_300, "")]
    assert store.insert(legs) == 0  # stored again after a crash: a no-op
    with pytest.raises(LedgerConflict, match="other content"):  # the same id for another account's entry
        store.insert([msgspec.structs.replace(legs[0], account_kind="")])


def test_player_sums_count_players_transfer_legs_and_never_an_agents_entries(store: LedgerStore) -> None:
    store.insert([opening(9, 1, "611", 1_000), credit(9, 2, "agent:a17|t1", 300), debit(5, 1, "agent:a17|t1", 300),
                  msgspec.structs.replace(debit(9, 3, "player:611|t2", 50), player_id="611", account_kind="",
                                          counterparty="agent:611"),
                  msgspec.structs.replace(credit(5, 2, "player:611|t2", 50), player_id="611",
                                          account_kind="agent", counterparty="player:611")])
    # player 611's opening, credit and debit; agent 611 (same id) and agent a17 are not players
    assert store.player_sums() == {"611": 1_000 + 300 - 50}


def test_an_agents_opening_entry_is_refused_with_its_whole_batch(store: LedgerStore) -> None:
    agent_open = msgspec.structs.replace(opening(5, 2, "a17", 1_000), account_kind="agent")
    with pytest.raises(LedgerConflict):
        store.insert([opening(5, 1, "611", 10), agent_open])
    assert store.partition_stats() == {}


def test_unsettled_transfers_lists_those_in_flight_and_the_wrong_ones_never_the_settled(store: LedgerStore) -> None:
    store.insert([
        debit(5, 1, "agent:a17|credited", 300), credit(9, 1, "agent:a17|credited", 300),
        debit(5, 2, "agent:a17|reversed", 70), leg(5, 3, "transfer_reverse", "agent:a17|reversed", 70),
        debit(5, 4, "agent:a17|in-flight", 25),
        credit(9, 2, "agent:a17|no-debit", 10),  # money made from nothing
        debit(5, 5, "agent:a17|short", 100), credit(9, 3, "agent:a17|short", 90),  # 10 lost on the way
    ])
    unsettled = {legs.transfer_id: legs for legs in store.unsettled_transfers(100)}
    assert sorted(unsettled) == ["agent:a17|in-flight", "agent:a17|no-debit", "agent:a17|short"]
    assert unsettled["agent:a17|in-flight"] == TransferLegs("agent:a17|in-flight", 1, 0, 0, -25, -25)
    assert unsettled["agent:a17|in-flight"].in_flight()
    assert unsettled["agent:a17|no-debit"] == TransferLegs("agent:a17|no-debit", 0, 1, 0, 0, 10)
    assert unsettled["agent:a17|short"] == TransferLegs("agent:a17|short", 1, 1, 0, -100, -10)
    assert not unsettled["agent:a17|no-debit"].in_flight() and not unsettled["agent:a17|short"].in_flight()
    assert [legs.transfer_id for legs in store.unsettled_transfers(2)] == ["agent:a17|in-flight",
                                                                          "agent:a17|no-debit"]


def test_a_ledger_file_from_before_transfers_takes_transfer_legs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteStore(str(path))
    try:
        (old,) = store.read(3, 0, 10)
        assert (old.account_kind, old.counterparty) == ("", "")
        assert store.insert([debit(5, 1, "agent:a17|t1", 300)]) == 1
        assert [legs.transfer_id for legs in store.unsettled_transfers(10)] == ["agent:a17|t1"]
    finally:
        store.close()


def test_a_stream_entry_carries_its_account_kind_and_counterparty() -> None:
    fields = {"id": "5:1", "player": "a17", "kind": "transfer_out", "amount": "-300", "balance": "700",
              "source": "transfer", "ref": "agent:a17|t1", "ts": "1700000000001", "cur": "EUR", "akind": "agent",
              "peer": "player:611"}
    assert from_stream(fields) == msgspec.structs.replace(debit(5, 1, "agent:a17|t1", 300), balance_after_minor=700)
    player_entry = from_stream({**fields, "akind": "", "peer": ""} | {"kind": "bet"})
    assert (player_entry.account_kind, player_entry.counterparty) == ("", "")
