"""verify's transfer check (app/ledger/transfer_check.py) over a real SQLite store: each
way a transfer's legs can be wrong is named, one in flight is not a problem. (The SQLite
store keeps what PostgreSQL's unique indexes would refuse, so every case can be stored.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ledger import LedgerEntry, LedgerStore, open_store
from app.ledger.transfer_check import transfer_problems


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened
    opened.close()


def leg(seq: int, kind: str, transfer: str, amount: int) -> LedgerEntry:
    partition = 5 if kind != "transfer_in" else 9
    return LedgerEntry(f"{partition}:{seq}", partition, seq, "a17", kind, amount, 0, "transfer", transfer, seq,
                       account_kind="agent" if kind != "transfer_in" else "", counterparty="player:611")


def test_each_wrong_transfer_is_named_and_one_in_flight_is_not(store: LedgerStore) -> None:
    store.insert([
        leg(1, "transfer_out", "agent:a17|flight", -25),
        leg(2, "transfer_out", "agent:a17|twice", -10), leg(1, "transfer_in", "agent:a17|twice", 10),
        leg(3, "transfer_reverse", "agent:a17|twice", 10),
        leg(4, "transfer_out", "agent:a17|short", -100), leg(2, "transfer_in", "agent:a17|short", 90),
        leg(5, "transfer_out", "agent:a17|upside", 7), leg(6, "transfer_reverse", "agent:a17|upside", -7),
        leg(7, "transfer_out", "agent:a17|ok", -3), leg(3, "transfer_in", "agent:a17|ok", 3),
    ])
    assert transfer_problems(store) == [
        "transfer agent:a17|short: its legs sum to -10, not 0 (1 debit(s), 1 credit(s), 0 reversal(s))",
        "transfer agent:a17|twice: debited or settled more than once (1 debit(s), 1 credit(s), 1 reversal(s))",
        "transfer agent:a17|upside: its debit is not negative (1 debit(s), 0 credit(s), 1 reversal(s))",
    ]


def test_more_unsettled_transfers_than_checked_says_so(store: LedgerStore) -> None:
    store.insert([leg(seq, "transfer_out", f"agent:a17|t{seq}", -1) for seq in range(1, 4)])
    assert transfer_problems(store, limit=5) == []
    assert transfer_problems(store, limit=3) == [
        "transfers: 3 or more are unsettled (in flight or wrong); only the first 3 were checked"]
