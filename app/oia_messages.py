"""Operator Integration API v2.49 wire format: request envelope, command data, replies.

Every reply is HTTP 200 and echoes the request as it came (msgspec.Raw, never
re-encoded), with response_timestamp and hash = sha1(status + timestamp + secret).
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Raw


NULL = Raw(b"null")
NO_PIPE = r"^[^|]*$"  # Important Note 5: no string parameter contains '|'

Text = Annotated[str, Meta(max_length=255, pattern=NO_PIPE)]
UserId = Annotated[str, Meta(min_length=1, max_length=70, pattern=NO_PIPE)] | int
TokenText = Annotated[str, Meta(max_length=50, pattern=NO_PIPE)]
CurrencyCode = Annotated[str, Meta(min_length=1, max_length=4, pattern=NO_PIPE)]
Id = Annotated[int, Meta(ge=0)]

MESSAGES = {
    "OP_20": "Invalid hash",
    "OP_21": "Invalid token",
    "OP_22": "Authorization failed",
    "OP_30": "Invalid currency",
    "OP_31": "Insufficient funds",
    "OP_33": "Player is blocked",
    "OP_34": "Player is not found",
    "OP_35": "Game is disabled",
    "OP_40": "Duplicated transaction ID",
    "OP_41": "Transaction not found",
    "OP_47": "Timeout",
    "OP_49": "Operation failed",
    "OP_50": "Internal error",
}


class Refusal(Exception):
    """An ERROR answer: an exact OP_xx code plus what exactly was wrong."""

    def __init__(self, code: str, detail: str = "", reason: str = "") -> None:
        assert code in MESSAGES, code
        self.code = code
        reason = reason or MESSAGES[code]
        self.message = f"{reason}: {detail}" if detail else reason
        super().__init__(self.message)


def invalid(detail: str) -> Refusal:
    """A malformed request: OP_50 (the seed's code for anything unlisted), named as such."""
    return Refusal("OP_50", detail, reason="Invalid request")


class Incoming(msgspec.Struct):
    """The envelope, every member kept raw so it can be echoed exactly."""

    command: Raw = NULL
    request_timestamp: Raw = NULL
    hash: Raw = NULL
    data: Raw = NULL


class AuthenticateData(msgspec.Struct):
    token: TokenText


class BalanceData(msgspec.Struct):
    token: TokenText
    currency_code: CurrencyCode
    user_id: UserId


class ChangeData(msgspec.Struct):
    user_id: UserId
    transaction_type: Literal["BET", "WIN", "REFUND"]
    transaction_id: Id
    round_id: Id
    game_id: Id
    currency_code: CurrencyCode
    amount: Raw  # DECIMAL(18,2): converted from its text, never through float
    token: TokenText | None = None  # may be null on WIN and REFUND (Important Note 3)
    round_finished: bool | None = None


class StatusData(msgspec.Struct):
    user_id: UserId
    transaction_id: Id


class CancelData(msgspec.Struct):
    user_id: UserId
    transaction_id: Id
    round_id: Id
    game_id: Id
    round_finished: bool | None = None


class FinishData(msgspec.Struct):
    round_id: Id
    user_id: UserId
    game_id: Id | None = None


class AuthenticateReply(msgspec.Struct):
    user_id: str
    user_name: str
    user_country: str
    display_name: str
    currency_code: str
    balance: Raw


class BalanceReply(msgspec.Struct):
    balance: Raw
    currency_code: str


class TransactionReply(msgspec.Struct):
    user_id: str | int
    transaction_id: int
    transaction_status: str


class FinishReply(msgspec.Struct):
    round_id: int
    user_id: str | int
    game_id: int | None


class ErrorReply(msgspec.Struct):
    error_code: str
    error_message: str


def typed_envelope(data: type) -> type:
    """The whole envelope decoded in one pass, for a well-formed request."""
    return msgspec.defstruct(f"{data.__name__}Envelope", [
        ("command", Text), ("request_timestamp", Text), ("hash", Text), ("data", data)])


COMMAND_DATA: dict[str, type] = {
    "authenticate": AuthenticateData,
    "balance": BalanceData,
    "changebalance": ChangeData,
    "status": StatusData,
    "cancel": CancelData,
    "finishround": FinishData,
}
INCOMING = msgspec.json.Decoder(Incoming)
TEXT = msgspec.json.Decoder(Text)
DATA = {command: msgspec.json.Decoder(kind) for command, kind in COMMAND_DATA.items()}
ENVELOPES = {command: msgspec.json.Decoder(typed_envelope(kind)) for command, kind in COMMAND_DATA.items()}
ENCODER = msgspec.json.Encoder()


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the protocol's choice


def field_error(exc: msgspec.ValidationError, prefix: str) -> str:
    """msgspec says '... - at `$.user_id`'; name the field as the request does."""
    return str(exc).replace("`$.", f"`{prefix}.").replace("`$`", f"`{prefix}`")


def well_formed(command: str, body: bytes) -> Any | None:
    """The typed envelope of a request that decodes cleanly, else None: the
    member-by-member path (envelope, text_member, command_data) then names
    exactly what is wrong, in the order the checks are specified."""
    decoder = ENVELOPES.get(command)
    if decoder is None:
        return None
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def envelope(body: bytes) -> Incoming:
    try:
        return INCOMING.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(f"the request body must be a JSON object ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise invalid(f"the request body is not valid JSON ({exc})") from exc


def text_member(raw: Raw, name: str) -> str:
    if bytes(raw) == b"null":
        raise invalid(f"missing {name}")
    try:
        return TEXT.decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid(field_error(exc, name)) from exc


def command_data(command: str, raw: Raw) -> Any:
    if bytes(raw) == b"null":
        raise invalid("missing data")
    try:
        return DATA[command].decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid(field_error(exc, "data")) from exc


class ReplyHeads:
    """The constant middle of every reply, per operator secret and status:
    response_timestamp (UTC, Y-m-d H:i:s) and its hash change once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.heads: dict[tuple[str, str], bytes] = {}

    def head(self, secret_key: str, status: str) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.heads.clear()
            self.second = second
        head = self.heads.get((secret_key, status))
        if head is None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            head = b',"response":{"status":"%b","response_timestamp":"%b","hash":"%b","data":' % (
                status.encode(), stamp.encode(), sha1_hex(status + stamp + secret_key).encode())
            self.heads[(secret_key, status)] = head
        return head


HEADS = ReplyHeads()


def echo_of(incoming: Incoming) -> bytes:
    return ENCODER.encode(incoming)


def reply(echo: bytes, secret_key: str, data: Any) -> bytes:
    """{"request": <the request as it came>, "response": {status, timestamp, hash, data}}."""
    status = "ERROR" if isinstance(data, ErrorReply) else "OK"
    return b'{"request":%b%b%b}}' % (echo, HEADS.head(secret_key, status), ENCODER.encode(data))


def refusal_reply(echo: bytes, secret_key: str, refusal: Refusal) -> bytes:
    return reply(echo, secret_key, ErrorReply(refusal.code, refusal.message))
