"""Operator Integration API v2.49: POST <path>/<command>, GET <path>/ping."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from msgspec import Raw
from redis.exceptions import RedisError, ResponseError, TimeoutError as RedisTimeout
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app import currency
from app.asgi import TEXT_TYPE, BodyTooLarge, Receive, Scope, Send, client_host, headers_of, read_body, respond
from app.errors import OutcomeUnknown, WalletUnavailable
from app.money import AmountError, minor_to_wire, wire_to_minor
from app.oia_messages import (
    DATA, AuthenticateData, invalid, AuthenticateReply, BalanceData, BalanceReply, CancelData, ChangeData,
    ErrorReply, FinishData, FinishReply, Incoming, Refusal, StatusData, TransactionReply,
    command_data, echo_of, envelope, refusal_reply, reply, sha1_hex, text_member, well_formed,
)
from app.oia_wallet import Change, OiaWallet
from app.settings import OiaSettings, OperatorSettings

log = logging.getLogger("walletd.oia")

BODY_BYTES_MAX = 64 * 1024
NO_REQUEST = echo_of(Incoming())
ACCESS_DENIED = b"Access denied"
DETAILS = {
    "OP_21": "no live session for this token, player, operator and game",
    "OP_22": "player blocked or unknown",
    "OP_30": "currency differs from the player's or is not enabled for the operator",
    "OP_31": "balance is lower than the bet",
    "OP_33": "player is blocked",
    "OP_34": "no player with this user_id",
    "OP_35": "game is disabled for this operator",
    "OP_40": "this transaction_id was used with other data",
    "OP_49": "the transaction was cancelled",
}
# Script results that are not OP codes themselves.
INTERNAL_CODES = {
    "NOT_FOUND": ("OP_41", "no such transaction (or round) for this player"),
    "NO_PLAYER": ("OP_34", DETAILS["OP_34"]),
    "LATE": ("OP_47", "the deadline passed before booking; nothing was booked"),
    "BACKLOG": ("OP_50", "ledger backlog full; nothing was booked"),
    "OVERFLOW": ("OP_50", "the balance would leave the supported range; nothing was booked"),
}
DEFAULT_EXPONENT = 2  # an unknown currency is refused by the script (OP_30) and recorded


def now_ms() -> int:
    return int(time.time() * 1000)


def refuse_code(code: str) -> Refusal:
    if code in INTERNAL_CODES:
        return Refusal(*INTERNAL_CODES[code])
    return Refusal(code, DETAILS.get(code, ""))


class Operators:
    def __init__(self, operators: list[OperatorSettings]) -> None:
        self.by_id = {op.id: op for op in operators}
        self.default = operators[0] if len(operators) == 1 else None
        # X-Authorization = sha1(command + secret): fixed per operator and command.
        self.expected = {(op.id, cmd): sha1_hex(cmd + op.secret_key).encode() for op in operators for cmd in DATA}

    def pick(self, headers: dict[bytes, bytes]) -> OperatorSettings | None:
        operator_id = headers.get(b"x-operator-id") or headers.get(b"x-tt-operator-id")
        if operator_id is None:
            return self.default
        return self.by_id.get(operator_id.decode(errors="replace"))

    def authorizes(self, operator: OperatorSettings, command: str, header: bytes | None) -> bool:
        if header is None:
            return False
        expected = self.expected.get((operator.id, command)) or sha1_hex(command + operator.secret_key).encode()
        return hmac.compare_digest(expected, header)


def check_signature(command: str, operator: OperatorSettings, body_command: str, timestamp: str, given: str) -> None:
    expected = sha1_hex(body_command + timestamp + operator.secret_key)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise Refusal("OP_20", "hash is not sha1(command + request_timestamp + secret_key)")
    if body_command != command:
        raise invalid(f"command {body_command!r} does not match the endpoint {command!r}")


def check_envelope(incoming: Incoming, command: str, operator: OperatorSettings) -> Any:
    """The command's data, once the envelope is well-formed and correctly signed."""
    if bytes(incoming.hash) == b"null":
        raise Refusal("OP_20", "missing hash")
    given = text_member(incoming.hash, "hash")
    body_command = text_member(incoming.command, "command")
    timestamp = text_member(incoming.request_timestamp, "request_timestamp")
    check_signature(command, operator, body_command, timestamp, given)
    if command not in DATA:
        raise invalid(f"unknown command {command!r}")
    return command_data(command, incoming.data)


def amount_minor(raw: bytes, currency_code: str) -> int:
    text = raw.decode(errors="replace").strip('"')  # a number, or the same as a JSON string
    try:
        exponent = currency.exponent(currency_code)
    except currency.CurrencyError:
        exponent = DEFAULT_EXPONENT
    try:
        return wire_to_minor(text, exponent, "data.amount")
    except AmountError as exc:
        raise invalid(str(exc)) from exc


def wire_balance(balance_minor: int, currency_code: str) -> Raw:
    """A JSON number with exactly 2 decimals, written as text: no float involved."""
    return Raw(minor_to_wire(balance_minor, currency.exponent(currency_code)).encode())


def allowed(operator: OperatorSettings, currency_code: str) -> bool:
    return not operator.currencies or currency_code in operator.currencies


class Oia:
    def __init__(self, wallet: OiaWallet, settings: OiaSettings) -> None:
        self.wallet = wallet
        self.settings = settings
        self.operators = Operators(settings.operators)
        self.handlers: dict[str, Callable[[OperatorSettings, Any, int], Awaitable[Any]]] = {
            "authenticate": self.authenticate,
            "balance": self.balance,
            "changebalance": self.changebalance,
            "status": self.status,
            "cancel": self.cancel,
            "finishround": self.finishround,
        }

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("PONG")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST <path>/<command>: a raw ASGI handler (app/asgi.py)."""
        deadline_ms = now_ms() + self.settings.budget_ms
        command = scope["path"].rsplit("/", 1)[1]
        headers = headers_of(scope)
        operator = self.operators.pick(headers)
        if operator is None or not self.operators.authorizes(operator, command, headers.get(b"x-authorization")):
            log.warning("oia %s from %s refused: unknown operator or bad X-Authorization", command,
                        client_host(scope) or "?")
            return await respond(send, ACCESS_DENIED, 403, TEXT_TYPE)
        try:
            body = await read_body(receive, headers, BODY_BYTES_MAX)
        except BodyTooLarge as exc:
            return await respond(send, refusal_reply(NO_REQUEST, operator.secret_key, invalid(str(exc))))
        await respond(send, await self.answer(command, operator, body, deadline_ms))

    async def answer(self, command: str, operator: OperatorSettings, body: bytes, deadline_ms: int) -> bytes:
        echo = NO_REQUEST
        try:
            typed = well_formed(command, body)
            if typed is not None:  # the usual case: decoded once, echoed as it came
                echo, data = body, typed.data
                check_signature(command, operator, typed.command, typed.request_timestamp, typed.hash)
            else:
                incoming = envelope(body)
                echo = echo_of(incoming)
                data = check_envelope(incoming, command, operator)
            if now_ms() > deadline_ms:
                raise Refusal("OP_47", "the deadline passed before the wallet was asked; nothing was done")
            result = await self.handlers[command](operator, data, deadline_ms)
        except Refusal as refusal:
            return refusal_reply(echo, operator.secret_key, refusal)
        except (RedisTimeout, OutcomeUnknown):
            log.error("oia %s: Redis timed out, outcome unknown: %s", command, body[:500])
            result = ErrorReply("OP_47", "Timeout: the wallet did not answer in time; outcome unknown")
        except ResponseError:
            log.exception("oia %s: script error", command)
            result = ErrorReply("OP_50", "Internal error")
        except (RedisError, OSError, WalletUnavailable) as exc:
            log.error("oia %s: wallet unavailable: %s", command, exc)
            result = ErrorReply("OP_50", "Internal error: wallet unavailable")
        except Exception:
            log.exception("oia %s: internal error", command)
            result = ErrorReply("OP_50", "Internal error")
        return reply(echo, operator.secret_key, result)

    async def authenticate(self, operator: OperatorSettings, data: AuthenticateData, deadline_ms: int) -> Any:
        found = await self.wallet.authenticate(operator.id, data.token)
        if found.code != "OK":
            raise refuse_code(found.code)
        if not allowed(operator, found.currency):
            raise Refusal("OP_22", f"currency {found.currency} is not enabled for operator {operator.id}")
        return AuthenticateReply(
            user_id=found.player_id, user_name=found.player_id, user_country=found.country,
            display_name=found.name or found.player_id, currency_code=found.currency,
            balance=wire_balance(found.balance_minor, found.currency),
        )

    async def balance(self, operator: OperatorSettings, data: BalanceData, deadline_ms: int) -> Any:
        outcome = await self.wallet.balance(operator.id, str(data.user_id), data.token, data.currency_code,
                                            allowed(operator, data.currency_code))
        if outcome.code != "OK":
            raise refuse_code(outcome.code)
        return BalanceReply(wire_balance(outcome.balance_minor, outcome.currency), outcome.currency)

    async def changebalance(self, operator: OperatorSettings, data: ChangeData, deadline_ms: int) -> Any:
        change = Change(
            operator_id=operator.id, player_id=str(data.user_id), kind=data.transaction_type,
            transaction_id=data.transaction_id, round_id=data.round_id, game_id=data.game_id,
            currency=data.currency_code, amount_minor=amount_minor(bytes(data.amount), data.currency_code),
            token=data.token, round_finished=data.round_finished,
            currency_allowed=allowed(operator, data.currency_code),
            game_disabled=data.game_id in operator.disabled_games, deadline_ms=deadline_ms,
        )
        outcome = await self.wallet.change(change)
        if outcome.code != "OK":
            raise refuse_code(outcome.code)
        return BalanceReply(wire_balance(outcome.balance_minor, outcome.currency), outcome.currency)

    async def status(self, operator: OperatorSettings, data: StatusData, deadline_ms: int) -> Any:
        state = await self.wallet.status(operator.id, str(data.user_id), data.transaction_id)
        if state not in ("OK", "ERROR", "CANCELED"):
            raise refuse_code(state)
        return TransactionReply(data.user_id, data.transaction_id, state)

    async def cancel(self, operator: OperatorSettings, data: CancelData, deadline_ms: int) -> Any:
        result = await self.wallet.cancel(operator.id, str(data.user_id), data.transaction_id, data.round_id,
                                          data.game_id, data.round_finished, deadline_ms)
        if result != "CANCELED":
            raise refuse_code(result)
        return TransactionReply(data.user_id, data.transaction_id, "CANCELED")

    async def finishround(self, operator: OperatorSettings, data: FinishData, deadline_ms: int) -> Any:
        result = await self.wallet.finish_round(operator.id, str(data.user_id), data.round_id)
        if result != "OK":
            raise refuse_code(result)
        return FinishReply(data.round_id, data.user_id, data.game_id)

