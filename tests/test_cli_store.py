"""Commands whose ledger store cannot be used: one line naming the store and exit 2
(like Redis down or a bad config), never a traceback, never exit 1 ("refused", and
for verify "the books do not match")."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.ledger.sqlite import SqliteStore
from tests.process import Server, walletd

pytestmark = pytest.mark.slow  # each test runs walletd as a process

EXIT_USAGE = 2


def the_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if " INFO " not in line]  # log lines
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


def serve_refused(config: Path) -> subprocess.CompletedProcess:
    return walletd(config, "serve", check=False, timeout_s=60)


def store_path(config: Path) -> Path:
    return config.parent / "ledger.db"  # tests/process.write_config's default storage.url


@contextmanager
def held(path: Path, exclusive_mode: bool) -> Iterator[None]:
    """Another process's write lock on the store (this test process, not walletd's).
    exclusive_mode: locking_mode=EXCLUSIVE, which in WAL mode keeps readers out too;
    without it a reader opens the store and only a writer waits (and fails)."""
    SqliteStore(str(path)).close()  # a real walletd store, in WAL mode
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if exclusive_mode:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        db.close()


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return Server(tmp_path, redis_url).config


@pytest.mark.parametrize("command", [["verify"], ["flush"], ["serve"]])
def test_an_unsupported_storage_url_is_one_line_and_exit_2(tmp_path: Path, redis_url: str,
                                                           command: list[str]) -> None:
    config = Server(tmp_path, redis_url, storage_url="mysql://db.example/ledger").config
    the_one_line(walletd(config, *command, check=False, timeout_s=60), "storage.url", "mysql://db.example/ledger")


@pytest.mark.parametrize("command", [["verify"], ["flush"], ["serve"]])
def test_a_store_locked_by_another_process_is_one_line_and_exit_2(config: Path, command: list[str]) -> None:
    with held(store_path(config), exclusive_mode=True):
        result = walletd(config, *command, check=False, timeout_s=60)
    the_one_line(result, "ledger store", str(store_path(config)), "locked")


def test_verify_that_cannot_write_its_drained_entries_is_one_line_and_exit_2(config: Path) -> None:
    """verify stores what the flusher has not yet: a store whose write lock another
    process holds opens, and the write fails after the busy timeout."""
    walletd(config, "player", "create", "p1", "--currency", "EUR", "--balance", "5.00")
    with held(store_path(config), exclusive_mode=False):
        result = walletd(config, "verify", check=False, timeout_s=60)
    the_one_line(result, "cannot use the ledger store", "locked")
    assert "verify: OK" in walletd(config, "verify").stdout  # the lock gone, the same entries store
