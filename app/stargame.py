"""StarGame Game Notifications API: GET ?cmd=getBalance|writeBet."""

from __future__ import annotations

import logging
import time

import msgspec
from redis.exceptions import RedisError, TimeoutError as RedisTimeout
from starlette.requests import Request
from starlette.responses import Response

from app import currency
from app.allowlist import AllowList
from app.money import AmountError, parse_minor
from app.responses import JSON
from app.settings import StarGameSettings
from app.wallet import Account, Wallet

log = logging.getLogger("walletd.stargame")

ALIAS_KIND = "stargame"
UID_MAX_LEN = 64
RUSSIAN = frozenset({"ru", "rus", "russian"})
REFUSALS = {
    "FUNDS": "insufficient funds",
    "BLOCKED": "player is blocked",
    "LATE": "deadline passed before booking; nothing booked",
    "OVERFLOW": "balance would exceed the supported range",
    "BACKLOG": "ledger backlog full; nothing booked",
}


class Reply(msgspec.Struct):
    status: str
    error: str
    userLogin: str  # noqa: N815 - the protocol's name
    cash: int
    currencyname: str
    currencyiso: str
    language: str


class Fail(msgspec.Struct):
    status: str
    error: str


class Refused(Exception):
    pass


def fail(error: str, status_code: int = 200) -> Response:
    return JSON(Fail("fail", error), status_code=status_code)


def reply(status: str, error: str, uid: str, account: Account) -> Response:
    language = "RUS" if account.language.lower() in RUSSIAN else "ENG"
    body = Reply(status, error, uid, account.balance_minor, account.currency,
                 currency.numeric(account.currency), language)
    return JSON(body)


def single(request: Request, name: str, required: bool = True) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise Refused(f"parameter {name} given more than once")
    if not values:
        if required:
            raise Refused(f"missing parameter {name}")
        return None
    return values[0]


def uid_of(request: Request) -> str:
    uid = single(request, "uid")
    assert uid is not None
    if not uid or len(uid) > UID_MAX_LEN or not uid.isprintable() or " " in uid:
        raise Refused(f"uid must be 1..{UID_MAX_LEN} printable characters without spaces")
    return uid


def amount(request: Request, name: str) -> int:
    try:
        return parse_minor(single(request, name), name)
    except AmountError as exc:
        raise Refused(str(exc)) from exc


class StarGame:
    def __init__(self, wallet: Wallet, settings: StarGameSettings) -> None:
        self.wallet = wallet
        self.settings = settings
        self.allowed = AllowList(settings.allowed_ips)

    async def endpoint(self, request: Request) -> Response:
        arrived_ms = int(time.time() * 1000)
        client = request.client.host if request.client else None
        if not self.allowed.allows(client):
            log.warning("stargame call from %s refused: not in stargame.allowed_ips", client)
            return fail("forbidden", status_code=403)
        try:
            cmd = single(request, "cmd")
            if cmd == "getBalance":
                return await self.get_balance(request)
            if cmd == "writeBet":
                return await self.write_bet(request, arrived_ms + self.settings.budget_ms)
            raise Refused(f"unknown cmd {cmd!r}")
        except Refused as exc:
            return fail(str(exc))
        except RedisTimeout:
            log.error("stargame %s: Redis timed out, outcome unknown", request.url.query)
            return fail("wallet timeout")
        except (RedisError, OSError) as exc:
            log.error("stargame: wallet unavailable: %s", exc)
            return fail("wallet unavailable")
        except Exception:
            log.exception("stargame: internal error")
            return fail("internal error")

    async def get_balance(self, request: Request) -> Response:
        uid = uid_of(request)
        single(request, "foo", required=False)  # cache buster: present or not, unused
        player_id = await self.wallet.resolve(ALIAS_KIND, uid)
        account = await self.wallet.account(player_id)
        if account is None:
            raise Refused("unknown player")
        return reply("success", "", uid, account)

    async def write_bet(self, request: Request, deadline_ms: int) -> Response:
        uid = uid_of(request)
        bet, win = amount(request, "bet"), amount(request, "win")
        player_id = await self.wallet.resolve(ALIAS_KIND, uid)
        if int(time.time() * 1000) > deadline_ms:
            raise Refused(REFUSALS["LATE"])
        booking = await self.wallet.stargame_book(player_id, bet, win, deadline_ms, uid)
        if booking.account is None:
            raise Refused("unknown player")
        if booking.code != "OK":
            return reply("fail", REFUSALS[booking.code], uid, booking.account)
        return reply("success", "", uid, booking.account)
