"""The OIA hot path's ledger-store lookups (app/protocols/oia/wallet.py StoreReader) on a
PostgreSQL that stopped answering: each fails within LOOKUP_TIMEOUT_S (the call then
answers OP_50, nothing booked), also when several wait for the one connection, instead
of holding the request and a worker thread for the store's 45 s call time-out each."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from app.ledger import StoreUnavailable
from app.protocols.oia.wallet import LOOKUP_TIMEOUT_S, StoreReader
from tests.postgres_servers import private_postgres

WAITING = 3  # lookups queued behind the one connection at once
MARGIN_S = 6.0  # a reconnect's connect time-out (5 s) plus scheduling


def found_or_failed(reader: StoreReader) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        reader._find("611", "testcasino|1")
    except StoreUnavailable:
        return False, time.monotonic() - started
    return True, time.monotonic() - started


@pytest.mark.slow
def test_lookups_on_a_hung_store_fail_within_the_lookup_timeout(tmp_path: Path) -> None:
    with private_postgres(tmp_path / "pg") as server:
        reader = StoreReader(server.url)
        try:
            assert reader._find("611", "testcasino|1") == []  # opened and migrated
            server.pause()
            try:
                with concurrent.futures.ThreadPoolExecutor(WAITING) as pool:
                    results = list(pool.map(lambda _: found_or_failed(reader), range(WAITING)))
            finally:
                server.resume()
            assert [ok for ok, _ in results] == [False] * WAITING
            assert max(took for _, took in results) < LOOKUP_TIMEOUT_S + MARGIN_S, results
            assert reader._find("611", "testcasino|1") == []  # used again once it answers
        finally:
            reader.close()
