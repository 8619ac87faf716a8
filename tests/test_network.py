"""`walletd serve` on the network, as real processes: TLS, the graceful-shutdown
timeout (README "TLS", "Stopping")."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.certs import self_signed
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.slow

SHUTDOWN_TIMEOUT_S = 2


def test_a_callback_over_https_with_a_self_signed_certificate(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url, tls=self_signed(tmp_path)).start()  # ready: /healthz over HTTPS
    try:
        walletd(server.config, "player", "create", "t1", "--currency", "EUR", "--balance", "10.00")
        with httpx.Client(verify=server.verify, timeout=5) as client:
            params = {"cmd": "writeBet", "uid": "t1", "bet": "250", "win": "100"}
            answer = client.get(server.base_url + "/stargame", params=params).json()
        assert (answer["status"], answer["cash"]) == ("success", 850)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        with pytest.raises(httpx.HTTPError):  # the certificate is checked: not one anyone trusts
            httpx.get(server.base_url + "/healthz", timeout=5)
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert "https://127.0.0.1" in server.log.read_text()


def test_in_flight_requests_get_shutdown_timeout_s_then_are_cut(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url, server_extra=f"shutdown_timeout_s = {SHUTDOWN_TIMEOUT_S}\n").start()
    assert server.process is not None
    # A request whose body never finishes: in flight until the timeout cuts it.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"POST /admin/players HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.3)  # read by walletd, which now waits for the rest
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        elapsed = time.monotonic() - started
    log = server.log.read_text()
    assert "timeout graceful shutdown exceeded" in log, log
    # Waited the configured 2 s, not uvicorn's default or the old fixed 10 s.
    assert SHUTDOWN_TIMEOUT_S <= elapsed < SHUTDOWN_TIMEOUT_S + 5, elapsed
