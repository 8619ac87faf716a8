"""Secrets from the config file, a file or the environment (one source each), weak
secrets refused, operator currencies checked: every refusal names the key, never the value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import settings as config
from app.secret_sources import SECRET_CHARS_MIN, operator_env_name
from app.settings import ConfigError, Settings

pytestmark = pytest.mark.usefixtures("no_walletd_env")

STRONG = "casino-oia-key-0123456789"
OTHER_STRONG = "another-oia-key-9876543210"
ADMIN = "admin-bearer-abcdefghijkl"


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "walletd.toml"
    path.write_text(text)
    return config.load(str(path))


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    message = str(refused.value)
    assert "\n" not in message
    return message


def operator(secret_line: str, operator_id: str = "casino-1") -> str:
    return f'[[oia.operators]]\nid = "{operator_id}"\n{secret_line}\n'


def test_env_names_follow_the_operator_id() -> None:
    assert operator_env_name("casino-1") == "WALLETD_OIA_SECRET_CASINO_1"
    assert operator_env_name("Big_Casino") == "WALLETD_OIA_SECRET_BIG_CASINO"


def test_secret_from_the_file_itself(tmp_path: Path) -> None:
    assert load(tmp_path, operator(f'secret_key = "{STRONG}"')).oia.operators[0].secret_key == STRONG


@pytest.mark.parametrize("content", [STRONG, STRONG + "\n", STRONG + "\r\n"])
def test_secret_from_a_secret_file_less_its_newline(tmp_path: Path, content: str) -> None:
    secret_file = tmp_path / "op.secret"
    secret_file.write_text(content, newline="")
    loaded = load(tmp_path, operator(f'secret_key_file = "{secret_file}"'))
    assert loaded.oia.operators[0].secret_key == STRONG


def test_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLETD_OIA_SECRET_CASINO_1", STRONG)
    monkeypatch.setenv("WALLETD_OIA_SECRET_OTHER", OTHER_STRONG)
    loaded = load(tmp_path, operator("") + operator("", "other"))
    assert [o.secret_key for o in loaded.oia.operators] == [STRONG, OTHER_STRONG]
    assert STRONG not in repr(loaded)


def test_no_source_is_refused_naming_all_three(tmp_path: Path) -> None:
    message = refusal(tmp_path, operator(""))
    assert "casino-1" in message and "not set" in message
    assert all(name in message for name in ("secret_key", "secret_key_file", "$WALLETD_OIA_SECRET_CASINO_1"))


@pytest.mark.parametrize("file_line, env, named", [
    (f'secret_key = "{STRONG}"\nsecret_key_file = "/run/op"', False, ("secret_key", "secret_key_file")),
    (f'secret_key = "{STRONG}"', True, ("secret_key", "$WALLETD_OIA_SECRET_CASINO_1")),
    ('secret_key_file = "/run/op"', True, ("secret_key_file", "$WALLETD_OIA_SECRET_CASINO_1")),
])
def test_two_sources_for_one_secret_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                file_line: str, env: bool, named: tuple[str, str]) -> None:
    """One source each: the environment does not silently win over a stale file value."""
    if env:
        monkeypatch.setenv("WALLETD_OIA_SECRET_CASINO_1", OTHER_STRONG)
    message = refusal(tmp_path, operator(file_line))
    assert "casino-1" in message and "one place" in message
    assert all(name in message for name in named)
    assert STRONG not in message and OTHER_STRONG not in message


@pytest.mark.parametrize("first, second", [("a-b", "a_b"), ("casino", "CASINO"), ("x-1", "X_1")])
def test_two_operators_on_one_env_name_are_refused(tmp_path: Path, first: str, second: str) -> None:
    message = refusal(tmp_path, operator(f'secret_key = "{STRONG}"', first)
                      + operator(f'secret_key = "{OTHER_STRONG}"', second))
    assert first in message and second in message and operator_env_name(first) in message


def test_a_missing_secret_file_is_refused_naming_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.secret"
    message = refusal(tmp_path, operator(f'secret_key_file = "{missing}"'))
    assert "secret_key_file" in message and str(missing) in message and "casino-1" in message


def test_an_unreadable_secret_file_is_refused_without_its_content(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        unreadable = tmp_path  # root reads any file; a directory cannot be read as one
    else:
        unreadable = tmp_path / "locked.secret"
        unreadable.write_text(STRONG)
        unreadable.chmod(0)
    message = refusal(tmp_path, operator(f'secret_key_file = "{unreadable}"'))
    assert "cannot be read" in message and str(unreadable) in message and STRONG not in message


def test_a_pipe_as_secret_file_is_refused(tmp_path: Path) -> None:
    """/dev/stdin or <(...) gives its secret once: serve read it, then its flusher process
    (and each of server.workers) loading the configuration again found it empty and was
    restarted forever while serve kept answering, nothing flushed."""
    read_end, write_end = os.pipe()
    os.write(write_end, STRONG.encode())
    os.close(write_end)
    try:
        message = refusal(tmp_path, operator(f'secret_key_file = "/dev/fd/{read_end}"'))
    finally:
        os.close(read_end)
    assert "not a regular file" in message and "casino-1" in message and STRONG not in message


@pytest.mark.parametrize("content", ["", "\n", "\r\n"])
def test_an_empty_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.secret"
    empty.write_text(content, newline="")
    message = refusal(tmp_path, operator(f'secret_key_file = "{empty}"'))
    assert "is empty" in message and str(empty) in message and "casino-1" in message


@pytest.mark.parametrize("secret, reason", [
    ("short-secret", f"shorter than {SECRET_CHARS_MIN}"),
    ("x" * (SECRET_CHARS_MIN - 1), f"shorter than {SECRET_CHARS_MIN}"),
    ("ed45553e-1702-4342-a70d-09bf7ff7f568", "example value"),  # the seed's API_TOKEN example
    ("ADMIN-TOKEN-FOR-TESTS", "example value"),
])
def test_a_weak_operator_secret_is_refused_without_its_value(tmp_path: Path, secret: str, reason: str) -> None:
    message = refusal(tmp_path, operator(f'secret_key = "{secret}"'))
    assert "casino-1" in message and reason in message and "allow_weak_secrets" in message
    assert secret not in message


def test_a_weak_secret_from_the_environment_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLETD_OIA_SECRET_CASINO_1", "change-me")
    message = refusal(tmp_path, operator(""))
    assert "casino-1" in message and "shorter than" in message and "change-me" not in message


def test_sixteen_characters_are_enough(tmp_path: Path) -> None:
    secret = "k" * SECRET_CHARS_MIN
    assert load(tmp_path, operator(f'secret_key = "{secret}"')).oia.operators[0].secret_key == secret


def test_allow_weak_secrets_accepts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN", "tok")
    loaded = load(tmp_path, "[oia]\nallow_weak_secrets = true\n" + operator('secret_key = "change-me"'))
    assert (loaded.oia.operators[0].secret_key, loaded.admin.token) == ("change-me", "tok")


@pytest.mark.parametrize("token", ["tok-123", "admin-token-for-tests"])
def test_a_weak_admin_token_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    message = refusal(tmp_path, f'[admin]\ntoken = "{token}"\n')
    assert "admin token" in message and "weak" in message and token not in message
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN", token)
    assert "admin token" in refusal(tmp_path, "")


def test_no_admin_token_is_no_weak_token(tmp_path: Path) -> None:
    assert load(tmp_path, "").admin.token == ""  # the admin API is off


def test_admin_token_from_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN + "\n")
    assert load(tmp_path, f'[admin]\ntoken = "{ADMIN}"\n').admin.token == ADMIN
    assert load(tmp_path, f'[admin]\ntoken_file = "{token_file}"\n').admin.token == ADMIN
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN_FILE", str(token_file))
    assert load(tmp_path, "").admin.token == ADMIN
    monkeypatch.delenv("WALLETD_ADMIN_TOKEN_FILE")
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN", ADMIN)
    assert load(tmp_path, "").admin.token == ADMIN


@pytest.mark.parametrize("toml, env, named", [
    (f'token = "{ADMIN}"\ntoken_file = "/run/t"', {}, ("admin.token", "admin.token_file")),
    (f'token = "{ADMIN}"', {"WALLETD_ADMIN_TOKEN": OTHER_STRONG}, ("admin.token", "$WALLETD_ADMIN_TOKEN")),
    ("", {"WALLETD_ADMIN_TOKEN": ADMIN, "WALLETD_ADMIN_TOKEN_FILE": "/run/t"},
     ("$WALLETD_ADMIN_TOKEN", "$WALLETD_ADMIN_TOKEN_FILE")),
])
def test_two_sources_for_the_admin_token_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str,
                                                     env: dict[str, str], named: tuple[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = refusal(tmp_path, f"[admin]\n{toml}\n")
    assert "admin token" in message and all(name in message for name in named)
    assert ADMIN not in message and OTHER_STRONG not in message


@pytest.mark.parametrize("via_env", [False, True])
def test_an_empty_or_missing_admin_token_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         via_env: bool) -> None:
    empty, missing = tmp_path / "empty.token", tmp_path / "missing.token"
    empty.write_text("\n")
    key = "$WALLETD_ADMIN_TOKEN_FILE" if via_env else "admin.token_file"
    for path, problem in ((empty, "is empty"), (missing, "cannot be read")):
        if via_env:
            monkeypatch.setenv("WALLETD_ADMIN_TOKEN_FILE", str(path))
        message = refusal(tmp_path, "" if via_env else f'[admin]\ntoken_file = "{path}"\n')
        assert key in message and str(path) in message and problem in message


@pytest.mark.parametrize("code", ["EUX", "eur", "EURO", ""])
def test_an_unknown_currency_is_refused_naming_operator_and_code(tmp_path: Path, code: str) -> None:
    message = refusal(tmp_path, operator(f'secret_key = "{STRONG}"\ncurrencies = ["EUR", "{code}"]'))
    assert "casino-1" in message and "currencies" in message and repr(code) in message


def test_iso_currencies_are_accepted(tmp_path: Path) -> None:
    loaded = load(tmp_path, operator(f'secret_key = "{STRONG}"\ncurrencies = ["EUR", "JPY", "KWD", "USD"]'))
    assert loaded.oia.operators[0].currencies == ["EUR", "JPY", "KWD", "USD"]


def test_the_settings_repr_shows_no_secret_and_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repr in an exception or a debug line: every secret and URL password masked, not only
    the operators' and the admin token (the Redis and store URLs' passwords were shown)."""
    monkeypatch.setenv("WALLETD_REDIS_URL", f"redis://walletd:{OTHER_STRONG}@redis.example:6379/0")
    monkeypatch.setenv("WALLETD_STORAGE_URL", f"postgresql://walletd:{OTHER_STRONG}x@db.example/walletd")
    shown = repr(load(tmp_path, operator(f'secret_key = "{STRONG}"') + f'[admin]\ntoken = "{ADMIN}"\n'))
    for secret in (STRONG, OTHER_STRONG, ADMIN):
        assert secret not in shown
    assert "redis.example" in shown and "db.example" in shown
