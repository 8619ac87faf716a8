"""`walletd init`: the starter walletd.toml, its secrets shown once, never an existing file overwritten
unless asked."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from app import cli, settings

SHOWN = re.compile(r"operator (\S+) secret_key: (\S+)\n  admin token: (\S+)\n")


def init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_private_config_that_loads_with_the_secrets_it_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    code, out, _ = init(capsys, "--config", str(path))
    assert code == 0
    assert mode(path) == 0o600
    operator, secret, token = SHOWN.search(out).groups()  # type: ignore[union-attr]
    assert "next: walletd serve" in out
    loaded = settings.load(str(path))  # every check serve makes at start
    assert [(o.id, o.secret_key, o.currencies) for o in loaded.oia.operators] == [(operator, secret, ["EUR"])]
    assert operator == "casino1"
    assert loaded.admin.token == token
    assert len(secret) >= 32 and len(token) >= 32 and secret != token
    assert (loaded.data_dir, loaded.redis.url, loaded.storage.url) == ("./var", "embedded", "")
    # Written, not left to the default: a later default never changes a deployment's count.
    assert "\npartitions = 256\n" in path.read_text() and loaded.wallet.partitions == 256


def test_each_init_makes_new_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = init(capsys, "--config", str(tmp_path / "a.toml"))
    _, second, _ = init(capsys, "--config", str(tmp_path / "b.toml"))
    assert SHOWN.search(first).groups()[1:] != SHOWN.search(second).groups()[1:]  # type: ignore[union-attr]


def test_every_key_written_has_a_comment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    init(capsys, "--config", str(path))
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"no comment above {line!r}"


def test_refuses_to_overwrite_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    path.write_text("# mine\n")
    path.chmod(0o644)
    code, out, err = init(capsys, "--config", str(path))
    assert (code, out) == (1, "")
    assert err == f"walletd: {path} exists; not overwritten (walletd init --force replaces it)\n"
    assert path.read_text() == "# mine\n"
    code, out, _ = init(capsys, "--config", str(path), "--force")
    assert code == 0
    assert SHOWN.search(out).group(2) in path.read_text()  # type: ignore[union-attr]
    assert mode(path) == 0o600  # narrowed, not left as it was


def test_operator_option_and_its_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    code, _, err = init(capsys, "--config", str(path), "--operator", "bad id!")
    assert code == 2
    assert "--operator 'bad id!' must be 1-20 of [A-Za-z0-9_-]" in err
    assert not path.exists()
    assert init(capsys, "--config", str(path), "--operator", "acme-01")[0] == 0
    assert [o.id for o in settings.load(str(path)).oia.operators] == ["acme-01"]


def test_writes_where_serve_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert init(capsys)[0] == 0
    assert (tmp_path / "walletd.toml").exists()
    monkeypatch.setenv(settings.ENV_CONFIG, str(tmp_path / "elsewhere.toml"))
    assert init(capsys)[0] == 0
    assert (tmp_path / "elsewhere.toml").exists()


def test_an_unwritable_place_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = init(capsys, "--config", str(tmp_path / "missing" / "walletd.toml"))
    assert code == 2
    assert err.startswith("walletd: cannot write ") and err.count("\n") == 1
