"""The admin listener with several workers (app/admin_listener.py): when the worker that
serves it dies, another process serves it again; the admin token never reaches the log."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from app.redis_server import free_port
from tests.process import Server
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.slow

TAKEOVER_S = 30.0  # uvicorn's supervisor notices a dead worker within a second or so; a loaded machine


def serving_pids(log: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"admin API on \S+ \(pid (\d+)\)", log.read_text())]


def test_the_admin_listener_comes_back_when_its_worker_dies(tmp_path: Path, redis_url: str) -> None:
    admin_port = free_port()
    server = Server(tmp_path, redis_url, workers=2, admin_extra=f"port = {admin_port}\n")
    server.start()
    admin_url = f"http://127.0.0.1:{admin_port}/healthz"
    try:
        deadline = time.monotonic() + TAKEOVER_S
        while not serving_pids(server.log):
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        first = serving_pids(server.log)[0]
        assert httpx.get(admin_url, timeout=5).text == "ok"
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + TAKEOVER_S
        while True:
            try:
                if httpx.get(admin_url, timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no process serves the admin listener again:\n" + server.log.read_text()
            time.sleep(0.2)
        assert first not in serving_pids(server.log)[1:]
    finally:
        server.stop()
    assert ADMIN_TOKEN not in server.log.read_text()
