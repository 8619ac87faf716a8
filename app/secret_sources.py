"""Where each secret comes from (the config file, a file it names, or the environment),
and whether it is strong enough to start with. README "Configuration" > "Secrets".

Every operator's secret_key and the admin token has exactly one source: a secret set in
two places is refused rather than one silently winning, so a stale value left in the
file can never be the one in use. Messages name the key and the path, never the value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings imports this module: the types only, for mypy
    from app.settings import AdminSettings, OperatorSettings, Settings

# Names of environment variables, not secrets.
ENV_ADMIN = "WALLETD_ADMIN_TOKEN"
ENV_ADMIN_FILE = "WALLETD_ADMIN_TOKEN_FILE"
ENV_OPERATOR_PREFIX = "WALLETD_OIA_SECRET_"
SECRET_CHARS_MIN = 16
# A secret file is a line or so; the bound keeps a wrong path (a log, a device) from
# being read whole into memory.
SECRET_FILE_BYTES_MAX = 64 * 1024
# Values the README, the protocol seeds, the tests and the bench have shown as secrets or
# tokens (compared case-insensitively): whoever copies one has no secret. The short ones
# are refused by length anyway; kept so the list says where they came from.
EXAMPLE_SECRETS = frozenset(value.lower() for value in (
    "change-me", "changeme", "...", "secret", "secret_key", "secretkey", "your_secret", "password",  # README, seeds
    "fgghhjjuku", "somecode", "777", "ed45553e-1702-4342-a70d-09bf7ff7f568",  # seeds' examples
    "test-secret", "other-secret", "admin-token-for-tests", "s3cret", "tok-123",  # tests before issue 12
    "bench-secret", "bench-admin",  # bench before issue 12
))


class SecretError(ValueError):
    """A secret source walletd cannot use (settings.load reports it as a ConfigError)."""


def operator_env_name(operator_id: str) -> str:
    """WALLETD_OIA_SECRET_<ID>: the id upper-cased, '-' as '_' (ids are [A-Za-z0-9_-])."""
    return ENV_OPERATOR_PREFIX + re.sub(r"[^A-Z0-9_]", "_", operator_id.upper())


def read_secret_file(key: str, path: str) -> str:
    """The file's text less its trailing newline; refused naming key and path when it
    cannot be read or holds nothing (never quoting what it holds)."""
    try:
        # O_NONBLOCK: a FIFO with no writer is refused below instead of hanging the start.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                # Every process serve starts (the flusher, server.workers) loads the
                # configuration again: a pipe or device (/dev/stdin) would give it nothing.
                raise SecretError(f"{key} {path!r} cannot be read as a secret: not a regular file "
                                  f"(each walletd process reads it again)")
            data = file.read(SECRET_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise SecretError(f"{key} {path!r} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > SECRET_FILE_BYTES_MAX:
        raise SecretError(f"{key} {path!r} is larger than {SECRET_FILE_BYTES_MAX} bytes: not a secret file")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretError(f"{key} {path!r} is not UTF-8 text") from None
    if not text:
        raise SecretError(f"{key} {path!r} is empty")
    return text


def one_source(what: str, sources: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The one (name, value) set among sources (an empty value is unset), None if none."""
    given = [(name, value) for name, value in sources if value]
    if len(given) > 1:
        raise SecretError(f"{what} is set by {' and by '.join(name for name, _ in given)}: "
                          f"set it in one place only")
    return given[0] if given else None


def resolve_operator(operator: OperatorSettings, env: Mapping[str, str]) -> None:
    what = f"oia.operators {operator.id}: the secret"
    variable = operator_env_name(operator.id)
    source = one_source(what, [("secret_key", operator.secret_key), ("secret_key_file", operator.secret_key_file),
                               (f"${variable}", env.get(variable, ""))])
    if source is None:
        raise SecretError(f"{what} is not set: give secret_key, secret_key_file or ${variable}")
    name, value = source
    if name == "secret_key_file":
        value = read_secret_file(f"oia.operators {operator.id}: secret_key_file", value)
    operator.secret_key = value


def resolve_admin(admin: AdminSettings, env: Mapping[str, str]) -> None:
    """No source at all is allowed: an empty token turns the admin API off."""
    source = one_source("the admin token", [
        ("admin.token", admin.token), ("admin.token_file", admin.token_file),
        (f"${ENV_ADMIN}", env.get(ENV_ADMIN, "")), (f"${ENV_ADMIN_FILE}", env.get(ENV_ADMIN_FILE, ""))])
    if source is None:
        return
    name, value = source
    if name in ("admin.token_file", f"${ENV_ADMIN_FILE}"):
        value = read_secret_file(name, value)
    admin.token = value


def refuse_shared_env_names(operators: list[OperatorSettings]) -> None:
    """'a-b', 'a_b' and 'A-B' are three operators but one variable: refused whatever is set,
    so adding an environment secret later cannot turn a working config ambiguous."""
    owners: dict[str, str] = {}
    for operator in operators:
        variable = operator_env_name(operator.id)
        if variable in owners and owners[variable] != operator.id:
            raise SecretError(f"oia.operators {owners[variable]} and {operator.id} would both take their secret "
                              f"from ${variable}: rename one")
        owners[variable] = operator.id


def resolve(settings: Settings, env: Mapping[str, str]) -> None:
    """Puts each secret's final value in secret_key / admin.token, from wherever it is set."""
    refuse_shared_env_names(settings.oia.operators)
    for operator in settings.oia.operators:
        resolve_operator(operator, env)
    resolve_admin(settings.admin, env)


def weakness(secret: str) -> str | None:
    """Why secret is too weak to start with, or None."""
    if len(secret) < SECRET_CHARS_MIN:
        return f"shorter than {SECRET_CHARS_MIN} characters"
    if secret.lower() in EXAMPLE_SECRETS:
        return "an example value shown in documentation or tests"
    return None


def weak_secret(settings: Settings) -> str | None:
    """The refusal for the first weak secret (naming whose, never the value), or None."""
    if settings.oia.allow_weak_secrets:
        return None
    named = [(f"oia.operators {operator.id}: the secret", operator.secret_key) for operator in settings.oia.operators]
    if settings.admin.token:  # empty: the admin API is off
        named.append(("the admin token", settings.admin.token))
    for name, secret in named:
        reason = weakness(secret)
        if reason is not None:
            return (f"{name} is weak ({reason}); use a random one of {SECRET_CHARS_MIN}+ characters, e.g. "
                    f"`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`, "
                    f"or set [oia] allow_weak_secrets = true on a test bed")
    return None
