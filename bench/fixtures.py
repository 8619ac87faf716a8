"""Bench players, their sessions, and the signed requests every load generator sends.

Players: many ordinary ones plus a few hot ones that take a fixed share of the
traffic (a streamer's account, a bot). All are created up front, straight
through walletd's own Wallet code, with a balance no run can exhaust.

OIA signatures: the body hash covers command + request_timestamp + secret only
and X-Authorization covers command + secret, so one fixed timestamp signs every
request; each request still carries its own transaction id.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from app.runtime import Runtime
from app.settings import Settings
from app.wallet import WalletError

# 16+ characters, no example value: walletd refuses weak secrets at start.
OPERATOR, SECRET, ADMIN_TOKEN = "benchcasino", "benchcasino-oia-key-5Tw1", "bench-admin-bearer-8Hd6"
GAME_ID = 200
CURRENCY = "EUR"
STAMP = "2026-11-21 10:00:00"  # request_timestamp: signed once, never checked for age


def now_stamp() -> str:
    """transaction_timestamp: a current one, as for a new transaction; an old one would send
    every booking through the late-retry guard's ledger store lookup (README "Late retries")."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
PLAYERS = 1000
HOT_PLAYERS = 4
HOT_SHARE = 0.2
BALANCE_MINOR = 10**12  # 10 billion EUR: no run spends it


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the protocol's choice


def player_ids() -> list[str]:
    return [f"bp{i}" for i in range(PLAYERS)] + [f"hot{i}" for i in range(HOT_PLAYERS)]


async def create_players(settings: Settings, redis_url: str) -> dict[str, str]:
    """player id -> session token (game GAME_ID); players that exist are kept."""
    async with Runtime(settings, redis_url) as runtime:
        tokens = {}
        for player in player_ids():
            with contextlib.suppress(WalletError):  # a second run on the same Redis
                await runtime.wallet.create_player(player, CURRENCY, BALANCE_MINOR, "DE", "en", player, [],
                                                   operator_id=OPERATOR)
            tokens[player], _, _ = await runtime.oia_wallet.open_session(OPERATOR, player, str(GAME_ID), "")
        return tokens


def write_players(tokens: dict[str, str], path: Path) -> Path:
    """One 'player token hot' line each, for wrk's Lua scripts and locust."""
    hot = {f"hot{i}" for i in range(HOT_PLAYERS)}
    path.write_text("".join(f"{p} {t} {int(p in hot)}\n" for p, t in tokens.items()))
    return path


def read_players(path: Path) -> list[tuple[str, str, bool]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(player, token, hot == "1") for player, token, hot in rows]


class Picker:
    """A player for the next request: a hot one HOT_SHARE of the time."""

    def __init__(self, players: list[tuple[str, str, bool]], seed: int = 1) -> None:
        self.hot = [p for p in players if p[2]]
        self.ordinary = [p for p in players if not p[2]]
        self.random = random.Random(seed)

    def __call__(self) -> tuple[str, str, bool]:
        pool = self.hot if self.hot and self.random.random() < HOT_SHARE else self.ordinary
        return self.random.choice(pool)


def oia_body(command: str, data: dict) -> bytes:
    return json.dumps({"command": command, "request_timestamp": STAMP, "hash": sha1(command + STAMP + SECRET),
                       "data": data}, separators=(",", ":")).encode()


def oia_headers(command: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Operator-Id": OPERATOR,
            "X-Authorization": sha1(command + SECRET)}


def change_data(player: str, token: str | None, kind: str, transaction_id: int, round_id: int,
                amount: str = "1.00") -> dict:
    return {"user_id": player, "transaction_type": kind, "transaction_id": transaction_id, "round_id": round_id,
            "round_finished": kind != "BET", "game_id": GAME_ID, "currency_code": CURRENCY, "amount": amount,
            "token": token, "transaction_timestamp": now_stamp(), "context": {"reason": "SPIN"}}


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in headers.items())]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def oia_bet_requests(players: list[tuple[str, str, bool]], first_id: int) -> Callable[[], bytes]:
    """An endless source of raw, signed changebalance BETs, each with a new transaction id.
    Built from one template: the open-loop client must cost far less than the server."""
    pick, ids = Picker(players), itertools.count(first_id)
    body = oia_body("changebalance", change_data("PLAYER", "TOKEN", "BET", 111, 111)).decode()
    template = body.replace('"PLAYER"', '"%s"').replace('"TOKEN"', '"%s"')
    for field in ("transaction_id", "round_id"):
        template = template.replace(f'"{field}":111', f'"{field}":%d')
    template = template.encode()
    head = raw_request("POST", "/oia/changebalance", oia_headers("changebalance"), b"").decode()
    head = head.replace("Content-Length: 0", "Content-Length: %d").encode()

    def next_request() -> bytes:
        player, token, _ = pick()
        tx = next(ids)
        payload = template % (player.encode(), tx, tx, token.encode())
        return head % len(payload) + payload

    return next_request


def stargame_bet_requests(players: list[tuple[str, str, bool]]) -> Callable[[], bytes]:
    pick = Picker(players)

    def next_request() -> bytes:
        return raw_request("GET", f"/stargame?cmd=writeBet&uid={pick()[0]}&bet=100&win=0", {})

    return next_request
