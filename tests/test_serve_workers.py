"""`walletd serve` as a real process tree: the one flush process (flusher and
StarGame reconciler), with one worker or several, is supervised like the embedded Redis."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.instances import flush_children
from tests.process import Server, walletd

pytestmark = pytest.mark.slow

RESTART_WAIT_S = 15.0


def wait_for(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def ledger_has(db: Path, player: str) -> bool:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT count(*) FROM ledger WHERE player_id = ?", (player,)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # not created yet
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dead_flush_process_is_restarted_and_bookings_reach_the_store_again(tmp_path: Path, workers: int) -> None:
    server = Server(tmp_path, workers=workers)
    server.start()
    try:
        assert server.process is not None
        assert wait_for(lambda: len(flush_children(server.process.pid)) == 1, RESTART_WAIT_S)
        [first] = flush_children(server.process.pid)
        os.kill(first, signal.SIGKILL)
        # Dead and never restarted, nothing would move bookings to the store again.
        assert wait_for(lambda: flush_children(server.process.pid) not in ([], [first]), RESTART_WAIT_S), \
            server.log.read_text()
        walletd(server.config, "player", "create", "w1", "--currency", "EUR", "--balance", "10.00")
        assert wait_for(lambda: ledger_has(tmp_path / "ledger.db", "w1"), RESTART_WAIT_S)
        assert "the flusher process" in server.log.read_text()
        second = flush_children(server.process.pid)
    finally:
        code = server.interrupt()
    assert code == 0
    assert "Traceback" not in server.log.read_text(), server.log.read_text()
    assert all(not Path(f"/proc/{pid}").exists() for pid in second)  # stopped with serve
