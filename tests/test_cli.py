"""The walletd command line, run as a process against real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.process import Server, walletd


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return Server(tmp_path, redis_url).config


def show(config: Path, player: str) -> dict:
    return json.loads(walletd(config, "player", "show", player).stdout)


def test_create_and_show(config: Path) -> None:
    out = walletd(config, "player", "create", "p1", "--currency", "EUR", "--balance", "100.00",
                  "--country", "DE", "--language", "de", "--name", "Max", "--alias", "stargame:901")
    assert "created p1" in out.stdout
    assert show(config, "p1") == {"player_id": "p1", "balance": "100.00", "balance_minor": 10000,
                                  "currency": "EUR", "country": "DE", "language": "de", "name": "Max",
                                  "aliases": ["stargame:901"]}


def test_currency_exponent_is_respected(config: Path) -> None:
    walletd(config, "player", "create", "jp", "--currency", "JPY", "--balance", "500")
    assert show(config, "jp")["balance_minor"] == 500
    refused = walletd(config, "player", "create", "jp2", "--currency", "JPY", "--balance", "5.5", check=False)
    assert refused.returncode == 1
    assert "more than 0 decimals" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--currency", "ZZZ"], "unknown ISO 4217 currency"),
        (["--currency", "EUR", "--balance", "-1"], "--balance must be a non-negative decimal"),
        (["--currency", "EUR", "--balance", "1.234"], "more than 2 decimals"),
        (["--currency", "EUR", "--alias", "nocolon"], "must look like stargame:117"),
    ],
)
def test_create_refusals(config: Path, args: list[str], message: str) -> None:
    result = walletd(config, "player", "create", "x", *args, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert walletd(config, "player", "show", "x", check=False).returncode == 1


def test_duplicate_player_and_alias_are_refused(config: Path) -> None:
    walletd(config, "player", "create", "d1", "--currency", "EUR", "--alias", "stargame:5")
    again = walletd(config, "player", "create", "d1", "--currency", "EUR", check=False)
    assert "already exists" in again.stderr
    taken = walletd(config, "player", "create", "d2", "--currency", "EUR", "--alias", "stargame:5", check=False)
    assert "already belongs to d1" in taken.stderr
    assert walletd(config, "player", "show", "d2", check=False).returncode == 1


def test_deposit_and_withdraw_are_idempotent_by_ref(config: Path) -> None:
    walletd(config, "player", "create", "m", "--currency", "EUR", "--balance", "10.00")
    walletd(config, "player", "deposit", "m", "5.25", "--ref", "dep-1")
    repeat = walletd(config, "player", "deposit", "m", "5.25", "--ref", "dep-1")
    assert "already booked" in repeat.stdout
    assert show(config, "m")["balance"] == "15.25"
    conflict = walletd(config, "player", "deposit", "m", "6.00", "--ref", "dep-1", check=False)
    assert conflict.returncode == 1 and "REF_CONFLICT" in conflict.stderr
    walletd(config, "player", "withdraw", "m", "15.25", "--ref", "wd-1")
    assert show(config, "m")["balance"] == "0.00"
    broke = walletd(config, "player", "withdraw", "m", "0.01", "--ref", "wd-2", check=False)
    assert broke.returncode == 1 and "FUNDS" in broke.stderr
    assert walletd(config, "verify").returncode == 0


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[redis]\nurll = "x"\n')
    result = walletd(config, "verify", check=False)
    assert result.returncode == 2
    assert "unknown field" in result.stderr.lower() or "url" in result.stderr
