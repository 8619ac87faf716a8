"""Game session tokens and the platform's launch URLs (OIA "Game and lobby launch").

A token is 5 decimal digits of the player's partition followed by random
[A-Za-z0-9]: the hot path finds the session key without another round trip.
"""

from __future__ import annotations

import secrets
import string
from urllib.parse import urlencode

from app.keys import PARTITION_DIGITS_MAX
from app.protocols.oia.messages import TOKEN_MAX_LEN, TOKEN_MIN_LEN
from app.settings import OiaSettings

# The spec's token alphabet: [A-Za-z0-9].
ALPHABET = string.ascii_letters + string.digits
PARTITION_DIGITS = 5  # every partition number (app/keys.py PARTITIONS_MAX) fits
RANDOM_CHARS = 27  # 27 of 62 symbols: about 160 bits, not guessable
TOKEN_LEN = PARTITION_DIGITS + RANDOM_CHARS
# The OIA game launch's device parameter.
DEVICES = ("desktop", "mobile")
assert PARTITION_DIGITS >= PARTITION_DIGITS_MAX, "a partition number would not fit a token's prefix"
assert TOKEN_MIN_LEN <= TOKEN_LEN <= TOKEN_MAX_LEN, "tokens must be as long as the spec allows"


def new_token(partition: int) -> str:
    assert 0 <= partition < 10**PARTITION_DIGITS
    token = f"{partition:0{PARTITION_DIGITS}d}" + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    assert len(token) == TOKEN_LEN
    return token


def token_partition(token: str, partitions: int) -> int | None:
    """The partition a token was issued in, or None for a token walletd never made."""
    if len(token) != TOKEN_LEN or not token.isascii() or not token.isalnum():
        return None
    prefix = token[:PARTITION_DIGITS]
    if not prefix.isdigit() or int(prefix) >= partitions:
        return None
    return int(prefix)


def launcher_base(host: str) -> str:
    if "://" in host:
        return host if host.endswith(("/", "?")) else host + "/"
    return f"https://{host}/"


def launch_urls(settings: OiaSettings, operator_id: str, target: tuple[str, str], token: str,
                currency: str, language: str, home_url: str, device: str, fun: bool) -> dict[str, str | None]:
    """target is ('game_id', id) or ('lobby_id', id). Without game_launch_host
    configured there is nothing to build and both URLs are None."""
    if not settings.game_launch_host:
        return {"launch_url": None, "fun_url": None}
    base = launcher_base(settings.game_launch_host)
    common = {"currency": currency, "language": language or "en", "operator_id": operator_id}
    extra = {"home_url": home_url or settings.home_url, "device": device}
    extra = {k: v for k, v in extra.items() if v}
    real = {"mode": "real", target[0]: target[1], "token": token, **common, **extra}
    urls: dict[str, str | None] = {"launch_url": base + "?" + urlencode(real), "fun_url": None}
    if fun and target[0] == "game_id":
        urls["fun_url"] = base + "?" + urlencode({"mode": "fun", "game_id": target[1], **common, **extra})
    return urls
