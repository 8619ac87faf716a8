"""Operator Integration API v2.49: POST <path>/<command>, GET <path>/ping."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from msgspec import Raw
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app import currency
from app.asgi import TEXT_TYPE, BodyTooLarge, Receive, Scope, Send, client_host, headers_of, read_body, respond
from app.callback_meter import DEADLINE, OUTCOME_UNKNOWN as REPLY_LOST, CallbackMeter
from app.callbacks import Answered, Callback
from app.errors import ConnectionFailed, OutcomeUnknown, WalletRefused, WalletUnavailable
from app.ids import PLAYER_ID_MAX_LEN, is_player_id
from app.ledger.guard import ColdStart
from app.logfields import in_call
from app.logsafe import RateLimitedLog, quoted
from app.money import AmountError, minor_to_wire, wire_to_minor
from app.protocols.oia.messages import (
    DATA,
    MESSAGES,
    AuthenticateData,
    AuthenticateReply,
    BalanceData,
    BalanceReply,
    CancelData,
    ChangeData,
    ErrorReply,
    FinishData,
    FinishReply,
    Incoming,
    Refusal,
    StatusData,
    TransactionReply,
    command_data,
    duplicate_member,
    echo_of,
    envelope,
    invalid,
    refusal_reply,
    reply,
    sha1_hex,
    text_member,
    utf8_problem,
    well_formed,
)
from app.protocols.oia.wallet import Change, OiaWallet
from app.redis_link import CALL_DEADLINE_MS, RedisLink
from app.settings import OiaSettings, OperatorSettings

log = logging.getLogger("walletd.oia")
# Refusals anyone can provoke without the secret (403s) or that a fault repeats
# for every call (wallet errors): one log line per kind per interval.
limited_log = RateLimitedLog(log)

# A callback is a few hundred bytes; a larger body is refused, not read on.
BODY_BYTES_MAX = 64 * 1024
# The echo of a request that could not be read at all.
NO_REQUEST = echo_of(Incoming())
# The 403 body for a caller outside the operator's allow-list.
ACCESS_DENIED = b"Access denied"
# What exactly went wrong, after the spec's message, per OP_xx code.
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
# The commands whose data names a transaction (its id is a field of their log lines).
TRANSACTION_COMMANDS = frozenset({"changebalance", "status", "cancel"})
# Script results that are not OP codes themselves.
INTERNAL_CODES = {
    "NOT_FOUND": ("OP_41", "no such transaction (or round) for this player"),
    "NO_PLAYER": ("OP_34", DETAILS["OP_34"]),
    "LATE": ("OP_47", "the deadline passed before booking; nothing was booked"),
    "BACKLOG": ("OP_50", "ledger backlog full; nothing was booked"),
    "STORE_DOWN": ("OP_50", "the ledger store cannot be read to check this id; nothing was booked"),
    "BEHIND": ("OP_50", "the ledger store is behind and may not hold this id yet: nothing was done, retry later"),
    "OVERFLOW": ("OP_50", "the balance would leave the supported range; nothing was booked"),
}
# What an operator reads when bookings stop at wallet.backlog_max (once a minute, with a count).
BACKLOG_LOG = ("oia: a partition's ledger backlog is full (wallet.backlog_max entries not yet in the ledger store: "
               "is the store down or the flusher stopped? its log says why); bookings refused unbooked (OP_50) "
               "until the flusher catches up")
DEFAULT_EXPONENT = 2  # an unknown currency is refused by the script (OP_30) and recorded
# Commands that may move money: once sent, a lost reply means the outcome is unknown.
BOOKING_COMMANDS = frozenset({"changebalance", "cancel"})
OUTCOME_UNKNOWN = ErrorReply("OP_47", "Timeout: outcome unknown; cancel the transaction or ask its status")
TIMEOUT = ErrorReply("OP_47", "Timeout: the wallet did not answer in time")
UNAVAILABLE = ErrorReply("OP_50", "Internal error: wallet unavailable; nothing was done")
# Outcome keys for the metrics (app/callback_meter.py): every OP_xx a Refusal carries,
# OK, the 403, and OP_47 told apart: a Refusal's OP_47 is always the deadline (nothing was
# asked of the wallet), an ErrorReply's always a lost or late Redis reply (wallet_error).
FORBIDDEN = "forbidden"
OP_47_UNKNOWN = "OP_47 outcome unknown"
OUTCOMES = {"OK": ("OK", ""), FORBIDDEN: (FORBIDDEN, ""), OP_47_UNKNOWN: ("OP_47", REPLY_LOST),
            **{code: (code, DEADLINE if code == "OP_47" else "") for code in MESSAGES}}
# The metrics' command labels: the commands walletd answers, and GET <path>/ping.
PING = "ping"


def now_ms() -> int:
    return int(time.time() * 1000)


def refuse_code(code: str) -> Refusal:
    if code == "BACKLOG":
        limited_log.error("backlog", BACKLOG_LOG)
    if code in INTERNAL_CODES:
        return Refusal(*INTERNAL_CODES[code])
    return Refusal(code, DETAILS.get(code, ""))


class Operators:
    def __init__(self, operators: list[OperatorSettings]) -> None:
        self.by_id = {op.id: op for op in operators}
        self.default = operators[0] if len(operators) == 1 else None
        # X-Authorization = sha1(command + secret): fixed per operator and command.
        self.expected = {(op.id, cmd): sha1_hex(cmd + op.secret_key).encode() for op in operators for cmd in DATA}

    @staticmethod
    def claimed(headers: dict[bytes, bytes]) -> str | None:
        """The operator id the request names, if any (request text: not yet a known operator)."""
        operator_id = headers.get(b"x-operator-id") or headers.get(b"x-tt-operator-id")
        return None if operator_id is None else operator_id.decode(errors="replace")

    def pick(self, headers: dict[bytes, bytes]) -> OperatorSettings | None:
        operator_id = self.claimed(headers)
        if operator_id is None:
            return self.default
        return self.by_id.get(operator_id)

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


def amount_text(raw: bytes) -> str:
    return raw.decode(errors="replace").strip('"')  # a number, or the same as a JSON string


def exponent_of(currency_code: str) -> int:
    try:
        return currency.exponent(currency_code)
    except currency.CurrencyError:
        return DEFAULT_EXPONENT


def amount_minor(raw: bytes, currency_code: str) -> int:
    """data.amount in the currency's minor units; AmountError if it has more
    decimals than the currency (or leaves the range in its units)."""
    return wire_to_minor(amount_text(raw), exponent_of(currency_code), "data.amount")


def wire_amount(raw: bytes) -> int:
    """data.amount as a DECIMAL(18,2) in hundredths, whatever the currency;
    a malformed amount is refused (OP_50)."""
    try:
        return wire_to_minor(amount_text(raw), DEFAULT_EXPONENT, "data.amount")
    except AmountError as exc:
        raise invalid(str(exc)) from exc


def player_id_of(user_id: str | int) -> str:
    """The player an OIA user_id names; outside the id alphabet no player can
    exist (OP_34), and such text must never reach a Redis key."""
    player_id = str(user_id)
    if not is_player_id(player_id):
        raise Refusal("OP_34", f"user_id is not a player id (1 to {PLAYER_ID_MAX_LEN} of A-Z a-z 0-9 _ . @ -)")
    return player_id


def wire_balance(balance_minor: int, currency_code: str) -> Raw:
    """A JSON number with exactly 2 decimals, written as text: no float involved."""
    return Raw(minor_to_wire(balance_minor, currency.exponent(currency_code)).encode())


def allowed(operator: OperatorSettings, currency_code: str) -> bool:
    return not operator.currencies or currency_code in operator.currencies


def wallet_error(command: str, exc: Exception, redis_down: bool = False) -> ErrorReply:
    """The answer to a wallet call that ended in an error. For a booking, only
    an error raised before anything was sent means nothing moved (OP_50); once
    sent, a lost reply may hide a booking that ran (OP_47: the platform cancels
    or asks status). redis_down: an outage the Redis link has logged already
    (app/redis_link.py), so its refusals log nothing more."""
    booking = command in BOOKING_COMMANDS
    if isinstance(exc, WalletUnavailable):
        answer, what = UNAVAILABLE, "wallet unavailable"
    elif isinstance(exc, OutcomeUnknown):
        answer, what = (OUTCOME_UNKNOWN if booking else TIMEOUT), "outcome unknown"
    elif isinstance(exc, (ConnectionFailed, OSError)) and booking:
        # redis-py's clients do not tell "could not send" from "sent, then lost":
        # after a possible send, only OP_47 is safe.
        answer, what = OUTCOME_UNKNOWN, "outcome unknown"
    elif isinstance(exc, WalletRefused):
        answer, what = ErrorReply("OP_50", "Internal error"), "Redis refused the call"  # it did not run
    elif isinstance(exc, (ConnectionFailed, OSError)):
        answer, what = UNAVAILABLE, "wallet unavailable"
    else:
        limited_log.error(f"internal-{type(exc).__name__}", "oia %s: internal error", quoted(command), exc_info=exc)
        return ErrorReply("OP_50", "Internal error")
    if redis_down and isinstance(exc, (WalletUnavailable, ConnectionFailed)):
        return answer
    # The exception's text comes from the client layer, never the request; quoted anyway.
    limited_log.error(f"wallet-{type(exc).__name__}", "oia %s: %s (%s): %s", quoted(command), what,
                      type(exc).__name__, quoted(str(exc)))
    return answer


class Oia:
    def __init__(self, wallet: OiaWallet, settings: OiaSettings, link: RedisLink, guard: ColdStart, *,
                 wait_ms: int = 0) -> None:
        # Calls are booked no later than this before the budget ends: the replicas' WAIT
        # may take it after the script (app/settings.py replica_wait_ms).
        self.wait_ms = wait_ms
        self.wallet = wallet
        self.settings = settings
        self.link = link
        self.guard = guard  # its refusal ('' = serve) answers every command OP_50 (Redis behind the store)
        self.operators = Operators(settings.operators)
        self.meter = CallbackMeter("oia", [*DATA, PING], OUTCOMES)
        self.handlers: dict[str, Callable[[OperatorSettings, Any, int], Awaitable[Any]]] = {
            "authenticate": self.authenticate,
            "balance": self.balance,
            "changebalance": self.changebalance,
            "status": self.status,
            "cancel": self.cancel,
            "finishround": self.finishround,
        }

    def callbacks(self) -> list[Callback]:
        """POST <path>/<command>; GET <path>/ping stays Starlette's (web.py)."""
        return [Callback(f"{self.settings.path}/", self.handle, frozenset({"POST"}), prefix=True, meter=self.meter)]

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("PONG")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Answered:
        """POST <path>/<command>: a raw ASGI handler (app/callbacks.py)."""
        deadline_ms = now_ms() + self.settings.budget_ms - self.wait_ms
        CALL_DEADLINE_MS.set(deadline_ms)
        command = scope["path"].rsplit("/", 1)[1]
        headers = headers_of(scope)
        operator = self.operators.pick(headers)
        if operator is None or not self.operators.authorizes(operator, command, headers.get(b"x-authorization")):
            limited_log.warning("forbidden", "oia %s from %s refused (403): unknown operator or bad X-Authorization",
                                quoted(command), quoted(client_host(scope) or "?"),
                                extra={"operator": operator.id if operator else self.operators.claimed(headers),
                                       "command": command})
            await respond(send, ACCESS_DENIED, 403, TEXT_TYPE)
            return command, FORBIDDEN
        try:
            body = await read_body(receive, headers, BODY_BYTES_MAX)
        except BodyTooLarge as exc:
            refusal = invalid(str(exc))
            await respond(send, refusal_reply(NO_REQUEST, operator.secret_key, refusal))
            return command, refusal.code
        answer, outcome = await self.answer(command, operator, body, deadline_ms)
        await respond(send, answer)
        return command, outcome

    async def answer(self, command: str, operator: OperatorSettings, body: bytes,
                     deadline_ms: int) -> tuple[bytes, str]:
        """The answer, and its outcome key (OUTCOMES)."""
        echo = NO_REQUEST
        try:
            typed = well_formed(command, body)
            if typed is not None:  # the usual case: decoded once, echoed as it came
                echo, data = body, typed.data
                check_signature(command, operator, typed.command, typed.request_timestamp, typed.hash)
            else:  # member by member, so the refusal names what is wrong
                problem = utf8_problem(body)
                if problem is not None:
                    raise invalid(problem)  # echoed as nothing: the body is not text
                incoming = envelope(body)
                echo = echo_of(incoming)
                duplicate = duplicate_member(body, command)
                if duplicate is not None:
                    raise invalid(f"member `{duplicate}` appears more than once")
                data = check_envelope(incoming, command, operator)
            # Every line logged from here on names the call (app/logfields.py).
            in_call(operator.id, command, data.transaction_id if command in TRANSACTION_COMMANDS else None)
            if self.guard.refusal:
                raise Refusal("OP_50", f"{self.guard.refusal}; nothing was done")
            if now_ms() > deadline_ms:
                raise Refusal("OP_47", "the deadline passed before the wallet was asked; nothing was done")
            result = await self.handlers[command](operator, data, deadline_ms)
        except Refusal as refusal:
            return refusal_reply(echo, operator.secret_key, refusal), refusal.code
        except Exception as exc:  # noqa: BLE001 - a callback never ends in a 500
            error = wallet_error(command, exc, self.link.down)
            outcome = OP_47_UNKNOWN if error.error_code == "OP_47" else error.error_code
            return reply(echo, operator.secret_key, error), outcome
        return reply(echo, operator.secret_key, result), "OK"

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
        outcome = await self.wallet.balance(operator.id, player_id_of(data.user_id), data.token, data.currency_code,
                                            allowed(operator, data.currency_code))
        if outcome.code != "OK":
            raise refuse_code(outcome.code)
        return BalanceReply(wire_balance(outcome.balance_minor, outcome.currency), outcome.currency)

    async def changebalance(self, operator: OperatorSettings, data: ChangeData, deadline_ms: int) -> Any:
        player_id = player_id_of(data.user_id)
        currency_allowed = allowed(operator, data.currency_code)
        amount = await self.amount_for(operator, player_id, data, currency_allowed)
        change = Change(
            operator_id=operator.id, player_id=player_id, kind=data.transaction_type,
            transaction_id=data.transaction_id, round_id=data.round_id, game_id=data.game_id,
            currency=data.currency_code, amount_minor=amount,
            token=data.token, round_finished=data.round_finished,
            currency_allowed=currency_allowed,
            game_disabled=data.game_id in operator.disabled_games, deadline_ms=deadline_ms,
            transaction_timestamp=data.transaction_timestamp,
        )
        outcome = await self.wallet.change(change)
        if outcome.code != "OK":
            raise refuse_code(outcome.code)
        return BalanceReply(wire_balance(outcome.balance_minor, outcome.currency), outcome.currency)

    async def amount_for(self, operator: OperatorSettings, player_id: str, data: ChangeData,
                         currency_allowed: bool) -> int:
        """data.amount in minor units of data.currency_code. An amount that does
        not fit that currency (1.50 JPY) is malformed (OP_50) only if the currency
        is the player's and allowed, and the player this operator's; otherwise the
        script answers: OP_30 recorded (the amount kept in hundredths, so a retry has
        the same fingerprint), or OP_34 for another operator's player, who must not
        show through this path either."""
        raw = bytes(data.amount)
        wire = wire_amount(raw)  # malformed whatever the currency: OP_50
        if exponent_of(data.currency_code) == DEFAULT_EXPONENT:
            return wire  # hundredths are the minor units: the same number, not parsed twice
        try:
            return amount_minor(raw, data.currency_code)
        except AmountError as exc:
            if currency_allowed:
                profile = await self.wallet.wallet.profile(player_id)
                if (profile is not None and profile.get("cur") == data.currency_code
                        and self.wallet.owner_of(profile) == operator.id):
                    raise invalid(str(exc)) from exc
            return wire

    async def status(self, operator: OperatorSettings, data: StatusData, deadline_ms: int) -> Any:
        state = await self.wallet.status(operator.id, player_id_of(data.user_id), data.transaction_id)
        if state not in ("OK", "ERROR", "CANCELED"):
            raise refuse_code(state)
        return TransactionReply(data.user_id, data.transaction_id, state)

    async def cancel(self, operator: OperatorSettings, data: CancelData, deadline_ms: int) -> Any:
        result = await self.wallet.cancel(operator.id, player_id_of(data.user_id), data.transaction_id, data.round_id,
                                          data.game_id, data.round_finished, deadline_ms)
        if result != "CANCELED":
            raise refuse_code(result)
        return TransactionReply(data.user_id, data.transaction_id, "CANCELED")

    async def finishround(self, operator: OperatorSettings, data: FinishData, deadline_ms: int) -> Any:
        result = await self.wallet.finish_round(operator.id, player_id_of(data.user_id), data.round_id)
        if result != "OK":
            raise refuse_code(result)
        return FinishReply(data.round_id, data.user_id, data.game_id)

