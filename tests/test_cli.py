"""The walletd command line, run as a process against real Redis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app import cli
from tests.process import Server, walletd
from tests.support import OPERATOR, OTHER_OPERATOR, OTHER_SECRET


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return Server(tmp_path, redis_url).config


def show(config: Path, player: str) -> dict:
    return json.loads(walletd(config, "player", "show", player).stdout)


@pytest.mark.slow
def test_create_and_show(config: Path) -> None:
    out = walletd(config, "player", "create", "p1", "--currency", "EUR", "--balance", "100.00",
                  "--country", "DE", "--language", "de", "--name", "Max", "--alias", "stargame:901")
    assert "created p1" in out.stdout
    assert show(config, "p1") == {"player_id": "p1", "balance": "100.00", "balance_minor": 10000,
                                  "currency": "EUR", "country": "DE", "language": "de", "name": "Max",
                                  "aliases": ["stargame:901"], "operator": OPERATOR}  # the only one: implied


@pytest.mark.slow
def test_currency_exponent_is_respected(config: Path) -> None:
    walletd(config, "player", "create", "jp", "--currency", "JPY", "--balance", "500")
    assert show(config, "jp")["balance_minor"] == 500
    refused = walletd(config, "player", "create", "jp2", "--currency", "JPY", "--balance", "5.5", check=False)
    assert refused.returncode == 1
    assert "more than 0 decimals" in refused.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_duplicate_player_and_alias_are_refused(config: Path) -> None:
    walletd(config, "player", "create", "d1", "--currency", "EUR", "--alias", "stargame:5")
    again = walletd(config, "player", "create", "d1", "--currency", "EUR", check=False)
    assert "already exists" in again.stderr
    taken = walletd(config, "player", "create", "d2", "--currency", "EUR", "--alias", "stargame:5", check=False)
    assert "already belongs to player d1" in taken.stderr
    assert walletd(config, "player", "show", "d2", check=False).returncode == 1


@pytest.mark.slow
def test_deposit_and_withdraw_are_idempotent_by_ref(config: Path) -> None:
    walletd(config, "player", "create", "m", "--currency", "EUR", "--balance", "10.00")
    walletd(config, "player", "deposit", "m", "5.25", "--ref", "dep-1")
    repeat = walletd(config, "player", "deposit", "m", "5.25", "--ref", "dep-1")
    assert "already booked" in repeat.stdout
    assert show(config, "m")["balance"] == "15.25"
    conflict = walletd(config, "player", "deposit", "m", "6.00", "--ref", "dep-1", check=False)
    assert conflict.returncode == 1
    assert "deposit refused: ref dep-1 was already used with another amount or direction" in conflict.stderr
    walletd(config, "player", "withdraw", "m", "15.25", "--ref", "wd-1")
    assert show(config, "m")["balance"] == "0.00"
    broke = walletd(config, "player", "withdraw", "m", "0.01", "--ref", "wd-2", check=False)
    assert broke.returncode == 1
    assert "withdraw refused: balance 0.00 is lower than 0.01; nothing moved" in broke.stderr
    assert walletd(config, "verify").returncode == 0


@pytest.mark.slow
def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[redis]\nurll = "x"\n')
    result = walletd(config, "verify", check=False)
    assert result.returncode == 2
    assert "unknown field" in result.stderr.lower() or "url" in result.stderr


@pytest.fixture
def two_operators(config: Path) -> Path:
    with config.open("a") as f:
        f.write(f'[[oia.operators]]\nid = "{OTHER_OPERATOR}"\nsecret_key = "{OTHER_SECRET}"\n')
    return config


@pytest.mark.slow
def test_operator_is_required_when_several_are_configured(two_operators: Path) -> None:
    refused = walletd(two_operators, "player", "create", "o1", "--currency", "EUR", check=False)
    assert refused.returncode == 1
    assert "owning operator is required" in refused.stderr and OTHER_OPERATOR in refused.stderr
    unknown = walletd(two_operators, "player", "create", "o1", "--currency", "EUR", "--operator", "nobody",
                      check=False)
    assert unknown.returncode == 1 and "unknown operator 'nobody'" in unknown.stderr
    assert walletd(two_operators, "player", "show", "o1", check=False).returncode == 1
    created = walletd(two_operators, "player", "create", "o1", "--currency", "EUR", "--operator", OTHER_OPERATOR)
    assert f"operator {OTHER_OPERATOR}" in created.stdout
    assert show(two_operators, "o1")["operator"] == OTHER_OPERATOR


@pytest.mark.slow
def test_session_for_another_operators_player_is_refused(two_operators: Path) -> None:
    walletd(two_operators, "player", "create", "o2", "--currency", "EUR", "--operator", OTHER_OPERATOR)
    refused = walletd(two_operators, "session", "new", "o2", "--game", "1", "--operator", OPERATOR, check=False)
    assert refused.returncode == 1
    assert "player o2 belongs to another operator than testcasino" in refused.stderr
    assert "token" in walletd(two_operators, "session", "new", "o2", "--game", "1", "--operator", OTHER_OPERATOR).stdout
    implied = json.loads(walletd(two_operators, "session", "new", "o2", "--game", "1").stdout)
    assert implied["operator_id"] == OTHER_OPERATOR  # the player's owner


@pytest.mark.slow
def test_overflow_and_backlog_are_said_in_words(config: Path) -> None:
    walletd(config, "player", "create", "big", "--currency", "EUR", "--balance", "90071992547409.90")
    over = walletd(config, "player", "deposit", "big", "1.00", "--ref", "d1", check=False)
    assert over.returncode == 1
    assert "deposit refused: the balance would exceed the largest one walletd holds" in over.stderr
    with config.open("a") as f:
        f.write("[wallet]\nbacklog_max = 1\n")  # the 'open' entry, not flushed, fills it
    full = walletd(config, "player", "withdraw", "big", "1.00", "--ref", "w1", check=False)
    assert full.returncode == 1
    assert "withdraw refused: the ledger backlog of this player's partition is full" in full.stderr
    for result in (over, full):
        assert not re.search(r"\b[A-Z]{2,}_?[A-Z]*\b", result.stderr.replace("EUR", "")), result.stderr


def test_every_admin_adjust_code_has_a_sentence() -> None:
    header = (Path(cli.__file__).parent.parent / "lua" / "admin_adjust.lua").read_text().split("\nlocal ")[0]
    codes = set(re.findall(r"\b(?:OK|REPEAT|[A-Z]{2,}(?:_[A-Z]+)*)\b", header.split("code is one of")[1]))
    assert codes >= {"OK", "REPEAT", "REF_CONFLICT", "FUNDS", "OVERFLOW", "BACKLOG", "NO_PLAYER"}
    for code in codes - {"OK", "REPEAT"}:
        message = cli.adjust_refusal("withdraw", "p", "r1", code, "5.00", "3.00")
        assert message.startswith("withdraw refused: ") and code not in message, message
