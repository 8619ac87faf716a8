"""`walletd healthcheck`, the container's HEALTHCHECK: exit 0 exactly when the configured
server's /healthz answers 200; 1 otherwise, a configuration it cannot read included
(Docker reserves exit code 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app import healthcheck
from app.redis_server import free_port
from app.settings import ServerSettings
from tests.certs import self_signed
from tests.process import Server, walletd
from tests.redis_servers import private_redis

UNHEALTHY_WITHIN_S = 10.0


def test_nothing_listening_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "walletd.toml"
    config.write_text(f'[server]\nhost = "0.0.0.0"\nport = {free_port()}\n')
    assert healthcheck.main(str(config)) == healthcheck.UNHEALTHY
    assert "127.0.0.1" in capsys.readouterr().err  # the wildcard is probed on the loopback address


def test_a_config_it_cannot_read_is_exit_1_not_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "walletd.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    assert healthcheck.main(str(config)) == healthcheck.UNHEALTHY
    assert "server.port" in capsys.readouterr().err


@pytest.mark.slow
def test_with_tls_on_it_speaks_https_to_a_self_signed_certificate(tmp_path: Path) -> None:
    server = Server(tmp_path / "walletd", tls=self_signed(tmp_path)).start()
    try:
        done = walletd(server.config, "healthcheck", check=False)
        assert (done.returncode, done.stdout.strip()) == (0, "walletd healthcheck: 200 ok"), done.stderr
        plain = healthcheck.probe(ServerSettings(host="127.0.0.1", port=server.port))
        assert not plain[0], plain  # the same port over plain HTTP gets no answer: it was HTTPS
    finally:
        server.stop()


@pytest.mark.slow
def test_a_serving_walletd_is_healthy_and_one_without_redis_is_not(tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis", extra=("--appendonly", "yes", "--appendfsync", "always")) as redis:
        server = Server(tmp_path / "walletd", redis_url=redis.admin_url).start()
        try:
            done = walletd(server.config, "healthcheck", check=False)
            assert (done.returncode, done.stdout.strip()) == (0, "walletd healthcheck: 200 ok"), done.stderr
            redis.stop()
            deadline = time.monotonic() + UNHEALTHY_WITHIN_S
            while (done := walletd(server.config, "healthcheck", check=False)).returncode == 0:
                assert time.monotonic() < deadline, "still healthy with its Redis stopped"
                time.sleep(0.2)
            assert done.returncode == 1
            assert done.stderr.startswith("walletd healthcheck: 503 unavailable"), done.stderr
        finally:
            server.stop()
