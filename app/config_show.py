"""`walletd config check`: the effective configuration (file, environment and secret files
resolved, defaults filled in) as TOML or JSON, with every secret masked."""

from __future__ import annotations

from typing import Any

import msgspec
import tomli_w

from app.logsafe import without_passwords
from app.settings import Settings

MASK = "***"
# A key naming one of these holds a secret, in any section (operators' secret_key, admin.token,
# and whatever key is added later), unless it names the file holding it (secret_key_file).
SECRET_WORDS = ("secret", "token", "password")
FORMATS = ("toml", "json")


def masked(value: Any, key: str = "") -> Any:
    """value with every secret shown as *** (an unset one stays empty: it says the admin
    API is off) and every password inside a URL (redis.url, storage.url) too."""
    if isinstance(value, dict):
        return {name: masked(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [masked(item, key) for item in value]
    if isinstance(value, str):
        if is_secret(key):
            return MASK if value else ""
        return without_passwords(value)
    return value


def is_secret(key: str) -> bool:
    return any(word in key for word in SECRET_WORDS) and not key.endswith("_file")


def effective(settings: Settings) -> dict[str, Any]:
    shown: dict[str, Any] = msgspec.to_builtins(settings)
    shown["storage"]["url"] = settings.storage_url  # the default's real path, not ""
    return masked(shown)


def render(settings: Settings, form: str) -> str:
    shown = effective(settings)
    if form == "json":
        return msgspec.json.format(msgspec.json.encode(shown)).decode()
    return tomli_w.dumps(shown)
