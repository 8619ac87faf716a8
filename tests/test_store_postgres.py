"""The PostgreSQL store's own promises beyond the contract (tests/test_store_contract.py):
its constraints refuse a wrong row and the whole batch with it, migrations apply once
(also under concurrent openers), and the store rides out its server restarting.
Reads behind the store's back only check what is physically stored (schema_migrations)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import psycopg
import pytest

from app import cli
from app.ledger import (
    KINDS,
    MONEY_KINDS,
    TRANSFER_KINDS,
    LedgerConflict,
    LedgerEntry,
    PartitionStats,
    StoreUnavailable,
    open_store,
)
from app.ledger.migrations import CREATE_TABLE, apply_migrations, migration_files
from app.ledger.postgres import PostgresStore
from app.runtime import Runtime
from app.settings import Settings
from tests.postgres_servers import private_postgres, with_database
from tests.support import OPERATOR, drain

MAX_MINOR = 2**53 - 1  # the largest amount walletd holds
# A call to a stopped server fails fast (connection refused), not after a time-out.
REFUSED_WITHIN_S = 5.0
# The call timeout of the hung-server test: short, so the test is.
HUNG_CALL_TIMEOUT_S = 1.0
# Every migration this walletd ships, in order (a new one is added here on purpose).
SHIPPED = ["0001_ledger.sql", "0002_transfers.sql"]


def booking(seq: int, player: str = "611", kind: str = "bet", ref: str = "testcasino|42",
            partition: int = 1) -> LedgerEntry:
    return LedgerEntry(f"{partition}:{seq}", partition, seq, player, kind, -100 if kind == "bet" else 100, 9_900,
                       "oia", ref, 1_700_000_000_000 + seq, fp=f"f{seq}", operator="testcasino", currency="EUR")


@pytest.fixture
def store(postgresql_url: str) -> PostgresStore:
    opened = PostgresStore(postgresql_url)
    yield opened
    opened.close()


def applied(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT name FROM schema_migrations ORDER BY version")]


def test_open_store_takes_both_url_spellings(postgresql_url: str) -> None:
    for url in (postgresql_url, postgresql_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert store.insert([booking(1)]) in (0, 1) and store.seq_max(1) == 1
        finally:
            store.close()


def leg(seq: int, kind: str = "transfer_out", ref: str = "agent:a17|dep-1", partition: int = 1,
        **change: object) -> LedgerEntry:
    """A transfer leg as the transfer scripts will write it (docs/transfers.md)."""
    amount = -500 if kind == "transfer_out" else 500
    entry = LedgerEntry(f"{partition}:{seq}", partition, seq, "a17" if kind != "transfer_in" else "611", kind,
                        amount, 10_000, "transfer", ref, 1_700_000_000_000 + seq, currency="EUR",
                        account_kind="agent" if kind != "transfer_in" else "",
                        counterparty="player:611" if kind != "transfer_in" else "agent:a17")
    return msgspec.structs.replace(entry, **change)


def test_every_kind_is_stored_and_an_unknown_one_refuses_its_batch(store: PostgresStore) -> None:
    batch = [msgspec.structs.replace(booking(n + 1, ref=f"testcasino|{n}", kind=kind),
                                     amount_minor=-5 if kind in MONEY_KINDS else 0)
             if kind not in TRANSFER_KINDS else leg(n + 1, kind, ref=f"agent:a17|{n}")
             for n, kind in enumerate(KINDS)]
    assert store.insert(batch) == len(KINDS)
    with pytest.raises(LedgerConflict, match="ledger_kind_check"):
        store.insert([booking(100), msgspec.structs.replace(booking(101, kind="gift"), amount_minor=0)])
    assert store.seq_max(1) == len(KINDS)


@pytest.mark.parametrize(("change", "constraint"), [
    ({"kind": "refusal", "amount_minor": -1}, "ledger_journal_moves_nothing"),
    ({"kind": "tombstone", "amount_minor": 5}, "ledger_journal_moves_nothing"),
    ({"amount_minor": 2**53}, "ledger_amount_minor_check"),
    ({"amount_minor": -(2**53)}, "ledger_amount_minor_check"),
    ({"balance_after_minor": 2**53}, "ledger_balance_after_minor_check"),
    ({"entry_id": "1:7"}, "ledger_check"),
    ({"partition": -1, "entry_id": "-1:3"}, "ledger_partition_check"),
    ({"seq": 0, "entry_id": "1:0"}, "ledger_seq_check"),
    ({"ts_ms": -1}, "ledger_ts_ms_check"),
    ({"source": ""}, "ledger_source_check"),
], ids=lambda v: str(v) if isinstance(v, str) else next(iter(v)))
def test_a_wrong_row_refuses_its_whole_batch(store: PostgresStore, change: dict, constraint: str) -> None:
    store.insert([booking(1, ref="testcasino|1")])
    good = [booking(2, ref="testcasino|2"), booking(1, partition=2, ref="testcasino|3")]
    with pytest.raises(LedgerConflict, match=constraint):
        store.insert([*good, msgspec.structs.replace(booking(3, ref="testcasino|4"), **change)])
    assert store.partition_stats() == {1: PartitionStats(1, 1)}
    assert store.insert(good) == 2  # the store still works, and had stored none of them


@pytest.mark.parametrize(("change", "constraint"), [
    ({"source": "admin"}, "ledger_transfer_leg"),
    ({"counterparty": ""}, "ledger_transfer_leg"),
    ({"amount_minor": 500}, "ledger_transfer_leg"),  # a debit is negative
    ({"amount_minor": 0}, "ledger_transfer_leg"),
    ({"kind": "transfer_in", "amount_minor": -500}, "ledger_transfer_leg"),  # a credit is positive
    ({"kind": "transfer_reverse", "amount_minor": -500}, "ledger_transfer_leg"),
    ({"account_kind": "bank"}, "ledger_account_kind_check"),
    ({"kind": "open", "amount_minor": 0, "source": "admin", "counterparty": ""}, "ledger_agent_not_opened"),
], ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v))
def test_a_wrong_transfer_leg_refuses_its_whole_batch(store: PostgresStore, change: dict, constraint: str) -> None:
    good = [leg(1, ref="agent:a17|ok"), booking(1, partition=2)]
    with pytest.raises(LedgerConflict, match=constraint):
        store.insert([*good, leg(2, **change)])
    assert store.partition_stats() == {}
    assert store.insert(good) == 2


def test_a_transfer_is_debited_once_and_settled_once_whatever_partitions_send_its_legs(store: PostgresStore) -> None:
    """Redis decides the two sides in two partitions: a second debit, or a credit and a
    reversal of one transfer id, would keep money twice; the store refuses the batch."""
    debit, credit = leg(1), leg(1, "transfer_in", partition=2)
    assert store.insert([debit, credit]) == 2
    for again in (leg(7), leg(3, partition=4), leg(2, "transfer_reverse"), leg(5, "transfer_in", partition=3)):
        constraint = "debited_once" if again.kind == "transfer_out" else "settled_once"
        with pytest.raises(LedgerConflict, match=f"ledger_transfer_{constraint}"):
            store.insert([leg(9, ref="agent:a17|other"), again])
    assert store.insert([debit, credit]) == 0  # the same legs again are a repeat, not a second booking
    assert store.unsettled_transfers(10) == []


def test_migration_0002_applies_on_a_database_that_has_0001_and_entries(postgresql_url: str) -> None:
    """An existing ledger (0001 only, as the walletd before transfers left it): its rows
    stay and read as players' entries; transfer legs are taken afterwards."""
    first_version, first_name, first_sql = migration_files()[0]
    with psycopg.connect(postgresql_url, autocommit=True) as db:
        db.execute(CREATE_TABLE)
        with db.transaction():
            db.execute(first_sql.encode())
            db.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (first_version, first_name))
            db.execute("INSERT INTO ledger VALUES (1, 1, '1:1', '611', 'bet', -100, 9900, 'oia', 'testcasino|42', 1, "
                       "'f1', 'testcasino', 'EUR', '', '', '', '')")
        with pytest.raises(psycopg.errors.CheckViolation):  # 0001 alone refuses the new kinds
            db.execute("INSERT INTO ledger VALUES (2, 1, '2:1', 'a17', 'transfer_out', -5, 0, 'transfer', 'r', 1, "
                       "'', '', '', '', '', '', '')")
    store = PostgresStore(postgresql_url)
    try:
        assert store.applied == SHIPPED[1:]
        (old,) = store.read(1, 0, 10)
        assert (old.kind, old.amount_minor, old.account_kind, old.counterparty) == ("bet", -100, "", "")
        assert store.insert([leg(1, partition=2), leg(1, "transfer_in", partition=3)]) == 2
        assert store.player_sums() == {"611": -100 + 500}  # the agent's debit is not a player's
    finally:
        store.close()
    assert applied(postgresql_url) == SHIPPED


def test_the_largest_amounts_are_stored_and_summed_exactly(store: PostgresStore) -> None:
    largest = msgspec.structs.replace(booking(1, kind="win"), amount_minor=MAX_MINOR, balance_after_minor=MAX_MINOR)
    second = msgspec.structs.replace(booking(2, kind="win", ref="testcasino|43"), amount_minor=MAX_MINOR)
    store.insert([largest, second])
    assert store.player_sums() == {"611": 2 * MAX_MINOR}


def test_a_second_booking_of_an_oia_transaction_refuses_the_batch_and_stores_nothing(store: PostgresStore) -> None:
    assert store.insert([booking(1)]) == 1
    for again in (booking(7), booking(1, partition=3)):  # another entry id, same player
        with pytest.raises(LedgerConflict, match="ledger_oia_booking"):
            store.insert([booking(5, ref="testcasino|other"), again])
        assert store.partition_stats() == {1: PartitionStats(1, 1)}
    assert store.insert([booking(1)]) == 0  # the same entry again is a repeat, not a second booking


def test_one_transaction_id_for_two_players_is_two_bookings(store: PostgresStore) -> None:
    """Redis answers OK for both (records are per player): the store must take both."""
    assert store.insert([booking(1), booking(2, player="612")]) == 2
    assert store.player_sums().keys() == {"611", "612"}


def test_one_transaction_id_may_carry_other_kinds_other_operators_and_journal_entries(store: PostgresStore) -> None:
    batch = [booking(1), booking(2, kind="win"), booking(3, kind="refund"), booking(4, ref="othercasino|42"),
             msgspec.structs.replace(booking(5, kind="cancel"), amount_minor=100),
             msgspec.structs.replace(booking(6, kind="refusal"), amount_minor=0, code="OP_31"),
             msgspec.structs.replace(booking(7, kind="refusal", player="612"), amount_minor=0, code="OP_34"),
             msgspec.structs.replace(booking(8), source="stargame", ref="testcasino|42")]
    assert store.insert(batch) == len(batch)


def test_migrations_run_twice_apply_nothing_the_second_time(postgresql_url: str) -> None:
    names = [name for _, name, _ in migration_files()]
    assert names == SHIPPED
    with psycopg.connect(postgresql_url, autocommit=True) as db:
        assert apply_migrations(db) == names
        assert apply_migrations(db) == []
    assert applied(postgresql_url) == names
    store = PostgresStore(postgresql_url)
    store.close()
    assert store.applied == []


def test_two_concurrent_openers_migrate_once(postgresql_url: str) -> None:
    openers = 4
    barrier = threading.Barrier(openers)
    results: list[list[str]] = []

    def open_one() -> None:
        barrier.wait()
        store = PostgresStore(postgresql_url)
        results.append(store.applied)
        store.close()

    threads = [threading.Thread(target=open_one) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [[]] * (openers - 1) + [SHIPPED]
    assert applied(postgresql_url) == SHIPPED


def test_a_database_migrated_by_a_newer_walletd_is_not_used(postgresql_url: str) -> None:
    PostgresStore(postgresql_url).close()
    with psycopg.connect(postgresql_url) as db:
        db.execute("INSERT INTO schema_migrations (version, name) VALUES ('9999', '9999_future.sql')")
    with pytest.raises(StoreUnavailable, match=r"'9999'.*newer walletd"):
        PostgresStore(postgresql_url)


def test_walletd_migrate_applies_then_reports_up_to_date(postgresql_url: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WALLETD_STORAGE_URL", postgresql_url)
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out == f"migrate: applied 0001_ledger.sql, 0002_transfers.sql to {postgresql_url}\n"
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out == f"migrate: {postgresql_url} is up to date\n"
    assert applied(postgresql_url) == SHIPPED


def test_an_unreachable_server_is_store_unavailable_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://walletd:sup3r-secret@127.0.0.1:1/ledger"  # nothing listens on port 1
    with pytest.raises(StoreUnavailable) as refused:
        open_store(url)
    assert "sup3r-secret" not in str(refused.value) and "walletd:***@127.0.0.1:1" in str(refused.value)
    monkeypatch.setenv("WALLETD_STORAGE_URL", url)
    assert cli.main(["migrate"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot use the ledger store" in err and "sup3r-secret" not in err


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql://walletd:sup3r secret@127.0.0.1:1/ledger", "sup3r secret"),  # libpq quotes it back
    ("postgresql://walletd:sup3r@secret@127.0.0.1:1/ledger", "secret@127"),  # libpq: host 'secret@127.0.0.1'
    ("postgresql://walletd:sup3r%zzsecret@127.0.0.1:1/ledger", "zzsecret"),  # libpq quotes the bad escape
    ("postgresql://walletd:sup3r/secret@127.0.0.1:1/ledger", "sup3r"),  # not a password to libpq: shown as given
    ("postgresql://walletd@127.0.0.1:1/ledger?password=sup3r secret", "secret"),
])
def test_a_url_libpq_would_misread_is_refused_without_its_password(
    url: str, secret: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(StoreUnavailable, match="percent-encode") as refused:
        open_store(url)
    assert secret not in str(refused.value)
    monkeypatch.setenv("WALLETD_STORAGE_URL", url)
    assert cli.main(["migrate"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "percent-encode" in err and secret not in err


def test_a_lock_held_elsewhere_fails_the_batch_as_unavailable(postgresql_url: str) -> None:
    store = PostgresStore(postgresql_url, lock_timeout_ms=200)
    try:
        with psycopg.connect(postgresql_url) as other:
            other.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")  # held until this block ends
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                store.insert([booking(1)])
        assert store.insert([booking(1)]) == 1  # the same connection goes on once the lock is gone
    finally:
        store.close()


@pytest.mark.slow
def test_the_store_rides_out_its_server_restarting(tmp_path: Path) -> None:
    with private_postgres(tmp_path / "pg") as server:
        store = PostgresStore(with_database(server.url, "postgres"))
        try:
            assert store.insert([booking(1)]) == 1
            server.stop()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.insert([booking(2, ref="testcasino|2")])
            with pytest.raises(StoreUnavailable):
                store.seq_max(1)
            assert time.monotonic() - started < REFUSED_WITHIN_S
            server.start()
            assert store.insert([booking(2, ref="testcasino|2")]) == 1
            assert store.partition_stats() == {1: PartitionStats(2, 2)}
        finally:
            store.close()


@pytest.mark.slow
def test_a_restart_between_calls_costs_no_failed_call(tmp_path: Path) -> None:
    with private_postgres(tmp_path / "pg") as server:
        store = PostgresStore(server.url)
        try:
            store.insert([booking(1)])
            server.stop()
            server.start()  # the store's connection is closed under it; the next call reconnects
            assert store.insert([booking(2, ref="testcasino|2")]) == 1
            server.stop(immediate=True)  # a crash: recovery at start, the committed batches kept
            server.start()
            assert store.seq_max(1) == 2
        finally:
            store.close()


@pytest.mark.slow
def test_a_hung_server_fails_the_call_within_the_call_timeout_and_is_used_again_after(tmp_path: Path) -> None:
    with private_postgres(tmp_path / "pg") as server:
        store = PostgresStore(server.url, call_timeout_s=HUNG_CALL_TIMEOUT_S)
        try:
            store.insert([booking(1)])
            server.pause()
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=f"no answer within {HUNG_CALL_TIMEOUT_S:g} s"):
                    store.insert([booking(2, ref="testcasino|2")])
                assert time.monotonic() - started < HUNG_CALL_TIMEOUT_S + REFUSED_WITHIN_S
            finally:
                server.resume()
            assert store.insert([booking(2, ref="testcasino|2")]) == 1  # a new connection
            assert store.partition_stats() == {1: PartitionStats(2, 2)}
        finally:
            store.close()


def test_a_call_that_answers_in_time_is_not_cut(store: PostgresStore) -> None:
    fast = PostgresStore(store.url, call_timeout_s=HUNG_CALL_TIMEOUT_S)
    try:
        for seq in range(1, 30):  # each call's watchdog is disarmed, none fires later on a reused connection
            fast.insert([booking(seq, ref=f"testcasino|{seq}")])
        connection = fast.db
        time.sleep(HUNG_CALL_TIMEOUT_S * 1.5)
        assert fast.seq_max(1) == 29
        assert fast.db is connection  # not cut and replaced behind the call
    finally:
        fast.close()


@pytest.mark.anyio
async def test_the_flusher_drains_what_the_scripts_wrote_into_postgresql(
    settings: Settings, postgresql_url: str
) -> None:
    settings.storage.url = postgresql_url
    async with Runtime(settings, settings.redis.url) as runtime:
        await runtime.wallet.create_player("611", "EUR", 10_000, "DE", "en", "John Doe", [], operator_id=OPERATOR)
        await runtime.wallet.adjust("611", "deposit", 500, "ref-1")
        await runtime.wallet.set_blocked("611", True)
        partition = runtime.wallet.keys.partition("611")
    assert await drain(settings) == 3
    assert await drain(settings) == 0
    store = open_store(postgresql_url)
    try:
        assert store.player_sums() == {"611": 10_500}
        opened, deposit, block = store.read(partition, 0, 10)
        assert opened.kind == "open" and opened.profile is not None and opened.profile["op"] == OPERATOR
        assert (deposit.kind, deposit.amount_minor, deposit.ref, deposit.currency) == ("deposit", 500, "ref-1", "EUR")
        assert (block.kind, block.amount_minor) == ("block", 0)
    finally:
        store.close()
