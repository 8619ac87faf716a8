"""The embedded redis-server's port already served by another Redis (a distro's
redis on 6379 named in [redis] port, another deployment's embedded server that
took the port during a restart): walletd must refuse, never book in that Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app.redis_server import EmbeddedRedis
from tests.process import Server
from tests.redis_servers import private_redis

pytestmark = pytest.mark.slow

EXIT_STARTUP = 2


def test_an_embedded_redis_whose_port_is_taken_is_refused_not_shared(tmp_path: Path) -> None:
    with private_redis(tmp_path / "other") as other:
        server = EmbeddedRedis(tmp_path / "var", port=other.port)
        try:
            with pytest.raises(RuntimeError, match=f"port {other.port}"):
                server.start()
        finally:
            server.stop()
        assert redis.Redis.from_url(other.admin_url).ping()  # the other one is left alone


def test_serve_with_a_taken_redis_port_exits_2_naming_it(tmp_path: Path) -> None:
    # Durable, as another walletd's embedded server would be: the durability check passes.
    with private_redis(tmp_path / "other", extra=("--appendonly", "yes", "--appendfsync", "always")) as other:
        foreign = redis.Redis.from_url(other.admin_url)
        result = Server(tmp_path / "w", redis_extra=f"port = {other.port}\n").refused()
        assert result.returncode == EXIT_STARTUP, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"port {other.port}" in lines[0], lines
        assert foreign.dbsize() == 0  # walletd wrote nothing into it
