"""A real `walletd serve`: malformed HTTP and unauthenticated callbacks cannot
flood its log or write lines of their own (issue 9 item 6)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.process import Server

pytestmark = pytest.mark.slow

FLOOD = 200  # requests of each kind; the log must not grow with them


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    yield running
    running.stop()


def send_raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


def test_floods_of_bad_requests_log_a_bounded_number_of_lines(server: Server) -> None:
    before = server.log.read_text().count("\n")
    for i in range(FLOOD):
        send_raw(server.port, b"GARBAGE %d\r\n\r\n" % i)  # not HTTP at all
    with httpx.Client(base_url=server.base_url) as client:
        for i in range(FLOOD):
            r = client.post(f"/oia/balance%0aFORGED {i}", content=b"{}", headers={"X-Authorization": "x"})
            assert r.status_code == 403
    server.stop()
    lines = server.log.read_text().splitlines()[before:]
    assert len(lines) < 10, "\n".join(lines[:20])
    assert not [line for line in lines if line.startswith("FORGED")]
