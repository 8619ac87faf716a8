"""`walletd ledger copy --from URL --to URL` as an operator runs it: progress and a
checked summary (exit 0), a second run copying nothing, a run killed with SIGKILL
mid-way resumed by the next, and every refusal one line with exit 1 (2 for a store
that cannot be used), passwords never printed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from app import spawn
from app.ledger import open_store
from tests.ledgers import entry_of, fill, sample_ledger, whole
from tests.process import Server, environment, walletd

pytestmark = pytest.mark.slow  # each test runs walletd as a process

EXIT_REFUSED, EXIT_USAGE = 1, 2
COPY_TIMEOUT_S = 120.0  # a few thousand entries take a second or two; past this it hangs


def copy(source: str, destination: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(spawn.command("app.cli", "ledger", "copy", "--from", source, "--to", destination, *extra),
                          capture_output=True, text=True, timeout=COPY_TIMEOUT_S, env=environment(), check=False)


def sqlite_source(tmp_path: Path, partitions: dict[int, int]) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    store = open_store(url)
    fill(store, sample_ledger(partitions))
    store.close()
    return url


def content(url: str) -> dict:
    store = open_store(url)
    try:
        return whole(store)
    finally:
        store.close()


def refused_in_one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


def test_a_copy_reports_progress_and_checks_the_result_and_a_second_run_copies_nothing(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path, {0: 30, 7: 12})
    destination = f"sqlite:///{tmp_path / 'to' / 'ledger.db'}"
    first = copy(source, destination, "--batch", "10")
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout.splitlines()
    assert out[0] == f"ledger copy {source} -> {destination}"
    assert out[1:3] == ["partition 0: 30 entries copied (after seq 0); total 30",
                        "partition 7: 12 entries copied (after seq 0); total 42"]
    assert out[3].startswith("ledger copy: 42 entries copied into 2 partition(s) in ")
    assert out[4] == ("ledger copy: the destination equals the source (every entry, and seq_max per partition, "
                      "every player's sum)")
    assert content(destination) == content(source)
    second = copy(source, destination)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ledger copy: 0 entries copied into 0 partition(s)" in second.stdout
    assert "the destination equals the source" in second.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_copy_killed_mid_way_is_resumed_by_the_next_run(tmp_path: Path, kind: str,
                                                          request: pytest.FixtureRequest) -> None:
    partitions = dict.fromkeys(range(16), 250)
    source = sqlite_source(tmp_path, partitions)
    destination = f"sqlite:///{tmp_path / 'to.db'}" if kind == "sqlite" else request.getfixturevalue("postgresql_url")
    command = spawn.command("app.cli", "ledger", "copy", "--from", source, "--to", destination, "--batch", "5")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment())
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ledger copy ")
    assert process.stdout.readline().startswith("partition 0: 250 entries copied")  # then in partition 1
    process.send_signal(signal.SIGKILL)
    assert process.wait(COPY_TIMEOUT_S) == -signal.SIGKILL
    process.stdout.close()
    interrupted = open_store(destination)
    stored = sum(stats.count for stats in interrupted.partition_stats().values())
    interrupted.close()
    assert 250 <= stored < 16 * 250, "the copy was killed before its end"
    resumed = copy(source, destination, "--batch", "5")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"ledger copy: {16 * 250 - stored:,} entries copied" in resumed.stdout
    assert "partition 0:" not in resumed.stdout  # complete before the kill: not even read again
    assert content(destination) == content(source)


def test_another_ledger_in_the_destination_is_refused_in_one_line(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path, {3: 20})
    destination = f"sqlite:///{tmp_path / 'to.db'}"
    store = open_store(destination)
    store.insert([msgspec.structs.replace(entry_of(3, 1), amount_minor=5)])
    store.close()
    result = copy(source, destination)
    refused_in_one_line(result, EXIT_REFUSED, "ledger entry 3:1 is in the destination with other content",
                        "another ledger")
    assert "equals" not in result.stdout


def test_a_destination_left_unequal_exits_1_naming_the_difference(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path, {3: 20})
    destination = f"sqlite:///{tmp_path / 'to.db'}"
    store = open_store(destination)
    store.insert([entry_of(5, 1)])  # a partition the source lacks: the copy leaves it alone
    store.close()
    result = copy(source, destination)
    assert result.returncode == EXIT_REFUSED, result.stdout + result.stderr
    assert "partition 5: the source holds 0 entries up to seq 0, the destination 1 up to seq 1" in result.stdout
    assert "the destination does NOT equal the source" in result.stdout


def test_a_copy_onto_itself_and_from_a_missing_file_are_refused(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path, {3: 2})
    refused_in_one_line(copy(source, f"sqlite:///{tmp_path}/x/../source.db"), EXIT_REFUSED, "same ledger store")
    missing = tmp_path / "typo.db"
    refused_in_one_line(copy(f"sqlite:///{missing}", source), EXIT_REFUSED, f"no ledger file at {missing}")
    assert not missing.exists()
    refused_in_one_line(copy(source, f"sqlite:///{tmp_path / 'to.db'}", "--batch", "0"), EXIT_REFUSED, "--batch")


def test_a_store_that_cannot_be_used_is_exit_2_and_its_password_is_never_printed(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path, {3: 2})
    result = copy(source, "postgresql://walletd:s3cret-pw@127.0.0.1:1/walletd?password=other-s3cret")
    refused_in_one_line(result, EXIT_USAGE, "cannot use the ledger store")
    assert "s3cret" not in result.stdout + result.stderr



def test_a_walletd_moves_from_sqlite_to_postgresql_as_the_readme_says(
    tmp_path: Path, redis_url: str, postgresql_url: str
) -> None:
    """README "Moving the ledger": copy while walletd runs, stop it, a last pass, switch
    storage.url, start again: every entry of both stores' lives is in PostgreSQL once."""
    sqlite = f"sqlite:///{tmp_path / 'before' / 'ledger.db'}"
    before = Server(tmp_path / "before", redis_url, storage_url=sqlite, data_dir=tmp_path / "var").start()
    try:
        walletd(before.config, "player", "create", "m1", "--currency", "EUR", "--balance", "10.00")
        walletd(before.config, "player", "deposit", "m1", "5.00", "--ref", "d1")
        wait_until_stored(sqlite, 2)
        assert copy(sqlite, postgresql_url).returncode in (0, EXIT_REFUSED)  # walletd may store more meanwhile
        walletd(before.config, "player", "deposit", "m1", "1.00", "--ref", "d2")  # maybe not yet copied
    finally:
        before.stop()
    last = copy(sqlite, postgresql_url)
    assert last.returncode == 0, last.stdout + last.stderr
    after = Server(tmp_path / "after", redis_url, storage_url=postgresql_url, data_dir=tmp_path / "var").start()
    try:
        walletd(after.config, "player", "withdraw", "m1", "2.00", "--ref", "w1")
    finally:
        after.stop()
    verified = walletd(after.config, "verify", check=False)
    assert verified.returncode == 0 and "verify: OK" in verified.stdout, verified.stdout + verified.stderr
    stored = content(postgresql_url)
    assert [(e.kind, e.amount_minor, e.ref) for entries in stored.values() for e in entries] == [
        ("open", 1000, ""), ("deposit", 500, "d1"), ("deposit", 100, "d2"), ("withdraw", -200, "w1")]


def wait_until_stored(url: str, count: int) -> None:
    deadline = time.monotonic() + COPY_TIMEOUT_S
    while True:
        store = open_store(url)
        try:
            if sum(stats.count for stats in store.partition_stats().values()) >= count:
                return
        finally:
            store.close()
        assert time.monotonic() < deadline, "the flusher never stored the entries"
        time.sleep(0.05)
