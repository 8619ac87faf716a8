"""[server] TLS and proxies, [admin] listener: each mistake refused at start in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import settings as config
from app.settings import ConfigError
from tests.certs import self_signed


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "walletd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        config.load(str(path))
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_tls_files_are_both_set_readable_and_a_certificate_with_its_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert "set both" in refusal(tmp_path, f'[server]\nssl_certfile = "{cert}"\n')
    assert "set both" in refusal(tmp_path, f'[server]\nssl_keyfile = "{key}"\n')
    missing = refusal(tmp_path, f'[server]\nssl_certfile = "{tmp_path}/none.pem"\nssl_keyfile = "{key}"\n')
    assert missing.startswith("server.ssl_certfile") and "cannot read it" in missing
    swapped = refusal(tmp_path, f'[server]\nssl_certfile = "{key}"\nssl_keyfile = "{cert}"\n')
    assert "server.ssl_certfile" in swapped and "server.ssl_keyfile" in swapped
    good = tmp_path / "good.toml"
    good.write_text(f'[server]\nssl_certfile = "{cert}"\nssl_keyfile = "{key}"\n')
    assert config.load(str(good)).server.ssl_keyfile == str(key)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[server]\nforwarded_allow_ips = ["10.0.0.0/33"]\n', "server.forwarded_allow_ips"),
        ('[server]\nforwarded_allow_ips = ["*"]\n', "server.forwarded_allow_ips"),
        ("[admin]\nport = 70000\n", "admin.port must be 0..65535"),
        ("[admin]\nport = -1\n", "admin.port must be 0..65535"),
        ("[server]\nport = 9000\n[admin]\nport = 9000\n", "admin.port 9000 is server.port"),
        ('[server]\nport = 9000\nhost = "0.0.0.0"\n[admin]\nport = 9000\n', "admin.port 9000 is server.port"),
    ],
)
def test_network_mistakes_are_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    assert named in refusal(tmp_path, text)


def test_the_admin_port_may_equal_the_server_port_on_another_host(tmp_path: Path) -> None:
    path = tmp_path / "walletd.toml"
    path.write_text('[server]\nport = 9000\nhost = "127.0.0.1"\n[admin]\nport = 9000\nhost = "127.0.0.2"\n')
    assert config.load(str(path)).admin.port == 9000
