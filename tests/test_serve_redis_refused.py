"""`walletd serve` against an external Redis it cannot use: exit 2, one line that
says it is Redis (redis-py's own text does not: "DB index is out of range"), no password."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.process import Server
from tests.redis_servers import private_redis

pytestmark = pytest.mark.slow

EXIT_STARTUP = 2
PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(("path", "password", "says"), [
    ("/99", PASSWORD, "DB index is out of range"),
    ("/0", "wrong-pw", "invalid username-password pair"),
])
def test_a_redis_walletd_cannot_use_is_named_in_one_line(tmp_path: Path, path: str, password: str, says: str) -> None:
    with private_redis(tmp_path / "redis", password=PASSWORD) as server:
        url = f"redis://:{password}@127.0.0.1:{server.port}{path}"
        result = Server(tmp_path / "w", redis_url=url).refused()
    assert result.returncode == EXIT_STARTUP, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot use Redis at redis://:***@127.0.0.1:{server.port}{path}" in lines[0] and says in lines[0], lines
    assert password not in lines[0]
