"""Config: one TOML file, env overrides, typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import settings as config
from app.settings import ConfigError

STRONG = "casino-oia-key-0123456789"


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("WALLETD_CONFIG", "WALLETD_REDIS_URL", "WALLETD_STORAGE_URL", "WALLETD_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = config.load()
    assert (s.server.host, s.server.port, s.redis.url) == ("127.0.0.1", 8080, "embedded")
    assert (s.oia.path, s.stargame.path, s.stargame.allowed_ips) == ("/oia", "/stargame", ["127.0.0.1", "::1"])
    assert s.storage_url == f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
    assert s.wallet.partitions == 256
    # Per-partition sizes split the same totals as 16 partitions had (app/settings.py).
    assert (s.oia.filter_bits, s.wallet.backlog_max) == (2**19, 62_500)


def test_sizes_not_set_follow_the_partition_count_and_set_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text("[wallet]\npartitions = 16\n")
    s = config.load(str(path))
    assert (s.oia.filter_bits, s.wallet.backlog_max) == (2**23, 1_000_000)  # 16 partitions' old defaults
    path.write_text("[wallet]\npartitions = 16\nbacklog_max = 7\n[oia]\nfilter_bits = 64\n")
    s = config.load(str(path))
    assert (s.oia.filter_bits, s.wallet.backlog_max) == (64, 7)


def test_file_then_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('data_dir = "/srv/w"\n[server]\nport = 9000\n[redis]\nurl = "redis://h:1/0"\n'
                    f'[[oia.operators]]\nid = "casino"\nsecret_key = "{STRONG}"\n')
    monkeypatch.setenv("WALLETD_CONFIG", str(path))
    monkeypatch.setenv("WALLETD_PORT", "9100")
    monkeypatch.setenv("WALLETD_STORAGE_URL", "sqlite:////tmp/x.db")
    monkeypatch.delenv("WALLETD_REDIS_URL", raising=False)
    s = config.load()
    assert (s.server.port, s.redis.url, s.storage_url) == (9100, "redis://h:1/0", "sqlite:////tmp/x.db")
    assert STRONG not in repr(s)  # secrets never reach a log line
    monkeypatch.setenv("WALLETD_REDIS_URL", "redis://other:2/0")
    assert config.load().redis.url == "redis://other:2/0"


@pytest.mark.parametrize(
    "text",
    ['[redis]\nurll = "embedded"\n', "[wallet]\npartitions = 0\n", '[stargame]\nallowed_ips = ["10.0.0.0/33"]\n',
     '[redis]\nurl = "http://x"\n', "[server]\nport = 'eighty'\n", "not toml [",
     f'[[oia.operators]]\nid = "bad|id"\nsecret_key = "{STRONG}"\n',
     '[[oia.operators]]\nid = "a"\nsecret_key = ""\n',
     f'[[oia.operators]]\nid = "a"\nsecret_key = "{STRONG}"\n[[oia.operators]]\nid = "a"\nsecret_key = "{STRONG}"\n',
     f'[[oia.operators]]\nid = "a"\nsecret_key = "{STRONG}"\ncurrencies = ["EUR"]\ndisabled_games = ["x"]\n',
     "[oia]\nretention_s = 0\n", "[flusher]\nretry_backoff_max_ms = 0\n", "[flusher]\ntick_ms = -1\n",
     "[redis]\nrequire_durable = 'no'\n"],
)
def test_bad_config_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        config.load(str(path))


def test_admin_token_from_env_is_not_logged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WALLETD_CONFIG", raising=False)
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN", STRONG)
    s = config.load()
    assert s.admin.token == STRONG
    assert STRONG not in repr(s)


@pytest.mark.parametrize("oia_path, stargame_path, named", [
    ("/oia", "/healthz", ["stargame.path", "/healthz"]),
    ("/oia", "/admin/sessions", ["stargame.path", "/admin"]),
    ("/oia", "/admin", ["stargame.path", "/admin"]),
    ("/admin", "/stargame", ["oia.path", "/admin"]),  # POST /admin/players would be an OIA command
    ("/oia", "/oia/ping", ["stargame.path", "oia.path"]),
    ("/oia", "/oia/changebalance", ["stargame.path", "oia.path"]),
    ("/oia", "/oia/a/b", ["stargame.path", "oia.path"]),
    ("/oia", "/oia", ["stargame.path", "oia.path"]),
    ("/wallet", "/wallet/", ["stargame.path", "oia.path"]),
])
def test_a_protocol_path_that_shadows_another_route_is_refused(tmp_path: Path, oia_path: str, stargame_path: str,
                                                                 named: list[str]) -> None:
    """The raw callback front answers a protocol's path before Starlette (healthz, admin,
    OIA's ping) or the other protocol could: such a configuration must not start."""
    path = tmp_path / "w.toml"
    path.write_text(f'[oia]\npath = "{oia_path}"\n[stargame]\npath = "{stargame_path}"\n')
    with pytest.raises(ConfigError) as refused:
        config.load(str(path))
    for name in named:
        assert name in str(refused.value)


@pytest.mark.parametrize("oia_path, stargame_path", [
    ("/oia", "/stargame"), ("/oia", "/oiax"), ("/wallet/oia", "/wallet/stargame"), ("/oia", "/healthzx"),
    ("/oia", "/administration"), ("/oia/v2", "/oia")])
def test_paths_that_only_look_alike_are_accepted(tmp_path: Path, oia_path: str, stargame_path: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(f'[oia]\npath = "{oia_path}"\n[stargame]\npath = "{stargame_path}"\n')
    loaded = config.load(str(path))
    assert (loaded.oia.path, loaded.stargame.path) == (oia_path, stargame_path)
