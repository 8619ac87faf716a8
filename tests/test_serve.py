"""`walletd serve` as a real process: one per data_dir, clean Ctrl-C, start-up errors as one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.process import Server, walletd
from tests.support import BUSY_LUA

pytestmark = pytest.mark.slow

EXIT_STARTUP, EXIT_RUNNING = 2, 3
HOLD_US = 1_000_000  # a script holding Redis this long: a callback is in flight when Ctrl-C comes


def writebet(server: Server, uid: str, bet: int) -> dict:
    params = {"cmd": "writeBet", "uid": uid, "bet": str(bet), "win": "0"}
    return httpx.get(server.base_url + "/stargame", params=params, timeout=5).json()


def balance(server: Server, uid: str) -> int:
    return httpx.get(server.base_url + "/stargame", params={"cmd": "getBalance", "uid": uid}, timeout=5).json()["cash"]


def test_a_second_serve_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first = Server(tmp_path / "first", data_dir=data_dir).start()  # embedded Redis
    try:
        second = Server(tmp_path / "second", data_dir=data_dir).refused()
        assert second.returncode == EXIT_RUNNING
        assert f"pid {first.process.pid}" in second.stderr and str(data_dir) in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        # The CLI still works next to the running server, through its Redis.
        walletd(first.config, "player", "create", "s1", "--currency", "EUR", "--balance", "1.00")
        assert balance(first, "s1") == 100
    finally:
        first.stop()
    assert first.process.returncode == 0


def test_a_second_serve_with_an_external_redis_is_refused_too(tmp_path: Path, redis_url: str) -> None:
    # Same data_dir, same Redis: the second would run a flusher under the same consumer name.
    data_dir = tmp_path / "var"
    first = Server(tmp_path / "first", redis_url, data_dir=data_dir).start()
    try:
        second = Server(tmp_path / "second", redis_url, data_dir=data_dir).refused()
        assert second.returncode == EXIT_RUNNING, second.stderr
        assert f"pid {first.process.pid}" in second.stderr
    finally:
        first.stop()


def test_ctrl_c_stops_walletd_then_redis_cleanly_and_keeps_the_data(tmp_path: Path) -> None:
    server = Server(tmp_path, budget_ms=10_000).start()
    walletd(server.config, "player", "create", "c1", "--currency", "EUR", "--balance", "10.00")
    assert writebet(server, "c1", 250)["status"] == "success"
    redis_url = (tmp_path / "var" / "redis.url").read_text().strip()
    busy = redis.Redis.from_url(redis_url)
    redis_pid = busy.info("server")["process_id"]

    # Connected before Ctrl-C: a connect made after it is refused (the listener is
    # closed), which is not what this test is about (it happened on a loaded machine).
    with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=server.base_url, timeout=5) as client:
        assert client.get("/stargame", params={"cmd": "getBalance", "uid": "c1"}).status_code == 200
        pool.submit(busy.eval, BUSY_LUA, 0, HOLD_US)  # Redis busy: the next writeBet waits inside walletd
        time.sleep(0.15)
        params = {"cmd": "writeBet", "uid": "c1", "bet": "250", "win": "0"}
        in_flight = pool.submit(lambda: client.get("/stargame", params=params).json())
        time.sleep(0.3)
        assert not in_flight.done()
        assert server.interrupt() == 0  # SIGINT to the process group, as a terminal's Ctrl-C
        assert in_flight.result(10)["status"] == "success"  # drained: answered before Redis stopped
    output = server.log.read_text()
    assert "Traceback" not in output, output
    redis_log = (tmp_path / "var" / "redis" / "redis.log").read_text()
    assert "Received SIGINT" not in redis_log  # the Ctrl-C did not reach Redis: walletd stopped it
    assert "Received SIGTERM" in redis_log and "ready to exit, bye bye" in redis_log
    assert not process_alive(redis_pid)

    server.start()  # the AOF replays: the booking is there
    try:
        assert balance(server, "c1") == 500
    finally:
        server.stop()


@pytest.mark.parametrize(("url", "named"), [
    ("mysql://walletd:s3cret@db.example/ledger", "unsupported storage.url 'mysql://walletd:***@db.example/ledger'"),
    ("postgresql://walletd:s3cret@127.0.0.1:1/ledger", "ledger store postgresql://walletd:***@127.0.0.1:1/ledger: "),
], ids=["unsupported", "unreachable"])
def test_a_bad_storage_url_exits_2_with_one_line(tmp_path: Path, url: str, named: str) -> None:
    server = Server(tmp_path, storage_url=url)
    result = server.refused()
    assert result.returncode == EXIT_STARTUP
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("walletd: ") and named in lines[0], lines
    assert "s3cret" not in lines[0]
    assert not (tmp_path / "var" / "redis.url").exists()  # the embedded Redis it started is stopped


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_still_exits_0(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url).start()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert "Traceback" not in server.log.read_text()


def test_serve_started_from_a_folder_holding_another_app_package_flushes_with_its_own(
        tmp_path: Path, redis_url: str) -> None:
    """`python -m app.cli flush` from serve's working directory would import the `app/`
    found there; the flush process must run the walletd that serve runs."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "app").mkdir(parents=True)
    marker = elsewhere / "imported"
    (elsewhere / "app" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit('not walletd')\n")
    server = Server(tmp_path, redis_url, cwd=elsewhere).start()
    try:
        walletd(server.config, "player", "create", "c1", "--currency", "EUR", "--balance", "1.00")
        deadline = time.monotonic() + 20
        while stored_entries(tmp_path / "ledger.db") == 0:  # the flush process stored the 'open' entry
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
    finally:
        server.stop()
    assert not marker.exists()


def stored_entries(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()
