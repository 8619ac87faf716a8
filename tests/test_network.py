"""`walletd serve` on the network, as real processes: TLS, behind a reverse proxy, the
admin API on its own listener, the graceful-shutdown timeout (README "TLS", "Behind a
proxy", "Admin listener", "Stopping")."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from app.metrics import FOLD_INTERVAL_S
from app.redis_server import free_port
from tests.certs import self_signed
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.slow

# Loopback addresses the test calls from (Linux routes all of 127/8 to lo): the trusted
# proxy, and a peer that is neither a proxy nor in stargame.allowed_ips (127.0.0.1, ::1).
PROXY, STRANGER = "127.0.0.2", "127.0.0.3"
# Allowed by nothing: the address a client tries to pass off, or its real one.
ELSEWHERE = "198.51.100.9"
SHUTDOWN_TIMEOUT_S = 2
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def from_address(local: str) -> httpx.Client:
    """A client whose connections come from local (the peer walletd sees)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=local), timeout=5)


def stargame(client: httpx.Client, server: Server, uid: str, forwarded: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return client.get(server.base_url + "/stargame", params={"cmd": "getBalance", "uid": uid}, headers=headers)


def test_a_callback_over_https_with_a_self_signed_certificate(tmp_path: Path, redis_url: str) -> None:
    admin_port = free_port()
    server = Server(tmp_path, redis_url, tls=self_signed(tmp_path), admin_extra=f"port = {admin_port}\n")
    server.start()  # ready: /healthz over HTTPS
    try:
        walletd(server.config, "player", "create", "t1", "--currency", "EUR", "--balance", "10.00")
        with httpx.Client(verify=server.verify, timeout=5) as client:
            params = {"cmd": "writeBet", "uid": "t1", "bet": "250", "win": "100"}
            answer = client.get(server.base_url + "/stargame", params=params).json()
            assert client.get(f"https://127.0.0.1:{admin_port}/healthz").text == "ok"  # the admin listener too
        assert (answer["status"], answer["cash"]) == ("success", 850)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        with pytest.raises(httpx.HTTPError):  # the certificate is checked: not one anyone trusts
            httpx.get(server.base_url + "/healthz", timeout=5)
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert "https://127.0.0.1" in server.log.read_text()


def test_stargame_believes_x_forwarded_for_only_from_a_trusted_proxy(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url, server_extra=f'forwarded_allow_ips = ["{PROXY}/32"]\n').start()
    try:
        walletd(server.config, "player", "create", "p1", "--currency", "EUR", "--balance", "1.00")
        with from_address(PROXY) as proxy, from_address(STRANGER) as stranger, from_address("127.0.0.1") as near:
            # Through the proxy, for an allowed client: allowed.
            assert stargame(proxy, server, "p1", "127.0.0.1").json()["status"] == "success"
            # The same header from a peer that is no proxy: judged by that peer.
            refused = stargame(stranger, server, "p1", "127.0.0.1")
            assert (refused.status_code, refused.json()) == (403, {"status": "fail", "error": "forbidden"})
            # A client's own left-most entry does not help: the proxy saw ELSEWHERE call it.
            assert stargame(proxy, server, "p1", f"127.0.0.1, {ELSEWHERE}").status_code == 403
            # Several proxies: trusted entries are skipped from the right, several header lines read as one.
            assert stargame(proxy, server, "p1", f"{ELSEWHERE}, 127.0.0.1, {PROXY}").status_code == 200
            # A malformed header from the proxy: refused as not allowed, never a 500.
            for garbage in ("not-an-address", "", "127.0.0.1,,", "127.0.0.1:8080", "127.0.0.1 10.0.0.1"):
                answer = stargame(proxy, server, "p1", garbage)
                assert (answer.status_code, answer.json()["error"]) == (403, "forbidden"), garbage
            # From the proxy without the header: the proxy itself calls, and is not allowed.
            assert stargame(proxy, server, "p1").status_code == 403
            # An allowed peer that is no proxy is judged by its own address, whatever it writes.
            assert stargame(near, server, "p1", ELSEWHERE).json()["status"] == "success"
            # OIA's log line names the same address the allow-list judged.
            oia = proxy.post(server.base_url + "/oia/balance", content=b"{}",
                             headers={"X-Forwarded-For": ELSEWHERE, "X-Operator-Id": "nobody"})
            assert oia.status_code == 403
    finally:
        server.stop()
    log = server.log.read_text()
    assert f"stargame call from '{STRANGER}' refused" in log and f"from '{ELSEWHERE}' refused (403)" in log, log
    assert "Traceback" not in log


def server_answer(base_url: str) -> str:
    """A StarGame answer the main listener gives, as /metrics then counts it."""
    assert httpx.get(base_url + "/stargame", params={"cmd": "getBalance", "uid": "a1"}, timeout=5).status_code == 200
    return 'walletd_callback_answers_total{code="success",command="getBalance",protocol="stargame"} 1.0'


def admin_server(tmp_path: Path, redis_url: str, workers: int) -> tuple[Server, int]:
    admin_port = free_port()
    return Server(tmp_path, redis_url, workers=workers, admin_extra=f"port = {admin_port}\n"), admin_port


@pytest.mark.parametrize("workers", [1, 2])
def test_the_admin_api_on_its_own_listener_and_not_on_the_main_one(
        tmp_path: Path, redis_url: str, workers: int) -> None:
    server, admin_port = admin_server(tmp_path, redis_url, workers)
    server.start()
    admin_url = f"http://127.0.0.1:{admin_port}"
    player = {"player_id": "a1", "currency": "EUR", "balance": "5.00"}
    try:
        assert httpx.post(server.base_url + "/admin/players", json=player, headers=AUTH).status_code == 404
        created = httpx.post(admin_url + "/admin/players", json=player, headers=AUTH, timeout=5)
        assert created.status_code == 201, created.text
        for url in (admin_url, server.base_url):
            assert httpx.get(url + "/healthz", timeout=5).text == "ok"
        # /metrics only for the operator: a scrape costs the worker tens of ms, not for the platform to repeat.
        assert httpx.get(server.base_url + "/metrics", timeout=5).status_code == 404
        counted = server_answer(server.base_url)
        # Another worker may have answered: its counts reach a scrape within FOLD_INTERVAL_S.
        deadline = time.monotonic() + 5 * FOLD_INTERVAL_S
        while counted not in httpx.get(admin_url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the admin listener's /metrics never counted the callback"
            time.sleep(0.1)
        # The callbacks stay on the main listener only.
        assert httpx.get(admin_url + "/stargame", params={"cmd": "getBalance", "uid": "a1"}).status_code == 404
        assert httpx.get(server.base_url + "/stargame", params={"cmd": "getBalance", "uid": "a1"}).json()["cash"] == 500
    finally:
        server.stop()
    log = server.log.read_text()
    assert server.process is not None and server.process.returncode == 0, log
    assert log.count(f"admin API on http://127.0.0.1:{admin_port}") == 1, log  # one process serves it
    assert "Traceback" not in log


def test_serve_refuses_an_admin_port_in_use_with_one_line(tmp_path: Path, redis_url: str) -> None:
    server, admin_port = admin_server(tmp_path, redis_url, 1)
    with socket.create_server(("127.0.0.1", admin_port)):
        result = server.refused()
    assert result.returncode == 2, result.stderr
    assert f"the admin listener on 127.0.0.1:{admin_port} cannot listen" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


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
