"""`walletd config check` (the effective configuration, secrets masked; exit 0 or 2) and
`walletd --version`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from app import cli, config_show

OPERATOR_SECRET = "file-casino-key-0123456789"  # in the config file
FILE_SECRET = "from-a-file-key-0123456789"  # in a secret file
ENV_SECRET = "from-the-env-key-0123456789"  # in WALLETD_OIA_SECRET_ENV_CASINO
ADMIN_TOKEN = "admin-from-env-0123456789"  # in WALLETD_ADMIN_TOKEN
REDIS_PASSWORD, STORE_PASSWORD = "redis-pass-0123456789", "store-pass-0123456789"
SECRETS = (OPERATOR_SECRET, FILE_SECRET, ENV_SECRET, ADMIN_TOKEN, REDIS_PASSWORD, STORE_PASSWORD)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_walletd_env: None) -> Path:
    """A configuration with a secret from each source and passwords in both URLs."""
    monkeypatch.setenv("WALLETD_OIA_SECRET_ENV_CASINO", ENV_SECRET)
    monkeypatch.setenv("WALLETD_ADMIN_TOKEN", ADMIN_TOKEN)
    secret_file = tmp_path / "casino.secret"
    secret_file.write_text(FILE_SECRET + "\n")
    path = tmp_path / "walletd.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n'
                    f'[redis]\nurl = "redis://walletd:{REDIS_PASSWORD}@redis.example:6379/0"\n'
                    f'[storage]\nurl = "postgresql://walletd:{STORE_PASSWORD}@db.example/walletd"\n'
                    f'[[oia.operators]]\nid = "plain-casino"\nsecret_key = "{OPERATOR_SECRET}"\ncurrencies = ["EUR"]\n'
                    f'[[oia.operators]]\nid = "file-casino"\nsecret_key_file = "{secret_file}"\n'
                    f'[[oia.operators]]\nid = "env-casino"\n')
    return path


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["config", "check", *args])
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out and secret not in err, secret
    return code, out, err


def test_prints_the_effective_configuration_as_toml_with_secrets_masked(
        config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, "--config", str(config_file))
    assert code == 0 and "valid" in err and str(config_file) in err
    shown = tomllib.loads(out)
    assert [o["secret_key"] for o in shown["oia"]["operators"]] == ["***"] * 3
    assert shown["oia"]["operators"][1]["secret_key_file"].endswith("casino.secret")  # a path, shown
    assert shown["admin"]["token"] == "***"
    assert shown["redis"]["url"] == "redis://walletd:***@redis.example:6379/0"
    assert shown["storage"]["url"] == "postgresql://walletd:***@db.example/walletd"
    assert shown["oia"]["operators"][0]["currencies"] == ["EUR"]
    assert shown["wallet"]["partitions"] == 256  # defaults filled in
    assert shown["wallet"]["backlog_max"] == 62_500  # the derived size shown, not 0


def test_json_and_an_unset_admin_token(config_file: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WALLETD_ADMIN_TOKEN")
    code, out, _ = check(capsys, "--config", str(config_file), "--format", "json")
    shown = json.loads(out)
    assert code == 0 and shown["admin"]["token"] == ""  # empty: the admin API is off, nothing to hide
    assert shown["storage"]["url"].endswith("@db.example/walletd")


def test_the_default_storage_url_is_shown_resolved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n')
    code, out, _ = check(capsys, "--config", str(path))
    assert code == 0 and tomllib.loads(out)["storage"]["url"] == f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"


@pytest.mark.parametrize("change, named", [
    (lambda text: text.replace('currencies = ["EUR"]', 'currencies = ["EUX"]'), "'EUX'"),
    (lambda text: text.replace('id = "env-casino"\n', 'id = "env-casino"\nsecret_key = "change-me"\n'),
     "env-casino"),  # two sources: the file and the environment
    (lambda text: text + '[server]\nworkers = 0\n', "server.workers"),
])
def test_an_invalid_configuration_exits_2_with_one_line(config_file: Path, capsys: pytest.CaptureFixture[str],
                                                        change: Callable[[str], str], named: str) -> None:
    config_file.write_text(change(config_file.read_text()))
    code, out, err = check(capsys, "--config", str(config_file))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("walletd: ") and named in err


@pytest.mark.parametrize("url, named", [
    (f"unix:///run/redis.sock?password={REDIS_PASSWORD}&db=x", "'db'"),  # a password as a parameter
    (f"redis://walletd:{REDIS_PASSWORD}@redis.example:notaport/0", "notaport"),  # once a traceback
])
def test_a_refused_redis_url_exits_2_with_one_line_and_no_password(
        config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        url: str, named: str) -> None:
    monkeypatch.setenv("WALLETD_REDIS_URL", url)
    code, out, err = check(capsys, "--config", str(config_file))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("walletd: redis.url ") and named in err


def test_a_weak_secret_exits_2_without_its_value(config_file: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLETD_OIA_SECRET_ENV_CASINO", "short-env-key")
    code, out, err = check(capsys, "--config", str(config_file))
    assert (code, out) == (2, "") and "env-casino" in err and "short-env-key" not in err


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"walletd {metadata.version('walletd')}\n"


@pytest.mark.slow
def test_version_from_a_source_tree_never_installed(tmp_path: Path) -> None:
    """-S: no site-packages, so no installed walletd; app.version needs only the stdlib.
    A copy of the tree, run from there: the checkout may hold an editable install's
    walletd.egg-info, which importlib.metadata finds on the path, and -c puts the working
    directory first on it (it did in CI's fresh clone)."""
    checkout = Path(cli.__file__).resolve().parent.parent
    root = tmp_path / "tree"
    shutil.copytree(checkout / "app", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(checkout / "pyproject.toml", root / "pyproject.toml")
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    shown = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from app.version import version; print(version())", str(root)],
                           capture_output=True, text=True, check=True, timeout=30, cwd=root).stdout
    assert shown == f"{pyproject['project']['version']} (source tree, not installed)\n"


@pytest.mark.usefixtures("no_walletd_env")
def test_walletd_inits_file_passes_and_its_generated_secrets_stay_hidden(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "walletd.toml"
    assert cli.main(["init", "--config", str(path)]) == 0
    written = capsys.readouterr().out
    generated = [line.rsplit(": ", 1)[1] for line in written.splitlines()
                 if "secret_key: " in line or "admin token: " in line]
    assert len(generated) == 2
    assert cli.main(["config", "check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert all(secret not in out + err for secret in generated)
    assert tomllib.loads(out)["admin"]["token"] == "***"


def test_any_key_naming_a_secret_is_masked_but_not_a_file_path() -> None:
    shown = config_show.masked({"x": {"api_token": "t", "db_password": "p", "token_file": "/run/t",
                                      "url": "redis://:pw@h:1/0", "names": ["a"]}})
    assert shown == {"x": {"api_token": "***", "db_password": "***", "token_file": "/run/t",
                           "url": "redis://:***@h:1/0", "names": ["a"]}}
