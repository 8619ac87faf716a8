"""Operator Integration API v2.49 wire format: request envelope, command data, replies.

Every reply is HTTP 200 and echoes the request as it came (msgspec.Raw, never
re-encoded), with response_timestamp and hash = sha1(status + timestamp + secret).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta, Raw

from app.ids import PLAYER_ID_MAX_LEN

# An echo of a missing member, without re-encoding.
NULL = Raw(b"null")
NO_PIPE = r"^[^|]*$"  # Important Note 5: no string parameter contains '|'

ID_DIGITS_MAX = 20  # the spec's INT 20 (transaction_id, round_id)
ID_MAX = 10**ID_DIGITS_MAX - 1
GAME_ID_MAX = 999_999  # the spec's INT 6
TOKEN_MIN_LEN = 20  # the spec's token: 20-50 of [A-Za-z0-9]
TOKEN_MAX_LEN = 50
USER_ID_MAX_LEN = 70  # the spec's STRING 70: every player id must fit
assert PLAYER_ID_MAX_LEN <= USER_ID_MAX_LEN, "a player id walletd accepts could not be an OIA user_id"

Text = Annotated[str, Meta(max_length=255, pattern=NO_PIPE)]
# Any text or integer here: one outside the player id alphabet (app/ids.py) is
# answered OP_34 ("no such player"), not OP_50, by app/protocols/oia/handler.py.
UserId = str | int
TokenText = Annotated[str, Meta(max_length=TOKEN_MAX_LEN, pattern=NO_PIPE)]
CurrencyCode = Annotated[str, Meta(min_length=1, max_length=4, pattern=NO_PIPE)]
# An INT 20 beyond int64 cannot be bounded by msgspec: check_id() bounds it after decoding.
Id = Annotated[int, Meta(ge=0)]
GameId = Annotated[int, Meta(ge=0, le=GAME_ID_MAX)]
if TYPE_CHECKING:
    TransactionId = int  # after check_id(): a digit string is turned into its number
else:
    # A transaction_id sent as a JSON string of 1-20 ASCII digits is the same id as the number.
    TransactionId = Id | Annotated[str, Meta(pattern=rf"^[0-9]{{1,{ID_DIGITS_MAX}}}\Z")]

# The spec's wording of each OP_xx code, sent as the ERROR answer's message.
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


def check_id(value: int | str, name: str) -> int:
    """An INT 20 id as its number; raised from __post_init__, msgspec reports it as invalid."""
    number = int(value)  # the str form matched ^[0-9]{1,20}$ already
    if number > ID_MAX:
        raise ValueError(f"data.{name} has more than {ID_DIGITS_MAX} digits")
    return number


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
    transaction_id: TransactionId
    round_id: Id
    game_id: GameId
    currency_code: CurrencyCode
    amount: Raw  # DECIMAL(18,2): converted from its text, never through float
    token: TokenText | None = None  # may be null on WIN and REFUND (Important Note 3)
    round_finished: bool | None = None
    # UTC "Y-m-d H:i:s"; missing or unusable only costs a ledger store lookup (README "Late retries").
    transaction_timestamp: Text | None = None

    def __post_init__(self) -> None:
        self.transaction_id = check_id(self.transaction_id, "transaction_id")
        check_id(self.round_id, "round_id")


class StatusData(msgspec.Struct):
    user_id: UserId
    transaction_id: TransactionId

    def __post_init__(self) -> None:
        self.transaction_id = check_id(self.transaction_id, "transaction_id")


class CancelData(msgspec.Struct):
    user_id: UserId
    transaction_id: TransactionId
    round_id: Id
    game_id: GameId
    round_finished: bool | None = None

    def __post_init__(self) -> None:
        self.transaction_id = check_id(self.transaction_id, "transaction_id")
        check_id(self.round_id, "round_id")


class FinishData(msgspec.Struct):
    round_id: Id
    user_id: UserId
    game_id: GameId | None = None

    def __post_init__(self) -> None:
        check_id(self.round_id, "round_id")


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


# The commands walletd answers, each with the shape of its data member.
COMMAND_DATA: dict[str, type[msgspec.Struct]] = {
    "authenticate": AuthenticateData,
    "balance": BalanceData,
    "changebalance": ChangeData,
    "status": StatusData,
    "cancel": CancelData,
    "finishround": FinishData,
}
# Decoders are built once per type: msgspec compiles each on creation.
INCOMING = msgspec.json.Decoder(Incoming)
TEXT = msgspec.json.Decoder(Text)
DATA = {command: msgspec.json.Decoder(kind) for command, kind in COMMAND_DATA.items()}
# Envelope types are made at run time (typed_envelope), so their decoders decode Any.
ENVELOPES: dict[str, msgspec.json.Decoder[Any]] = {
    command: msgspec.json.Decoder(typed_envelope(kind)) for command, kind in COMMAND_DATA.items()
}
# One encoder for every reply: reused, not built per call.
ENCODER = msgspec.json.Encoder()


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the protocol signs with SHA-1


def field_error(exc: msgspec.ValidationError, prefix: str) -> str:
    """msgspec says '... - at `$.user_id`'; name the field as the request does."""
    return str(exc).replace("`$.", f"`{prefix}.").replace("`$`", f"`{prefix}`")


def member_names(command: str) -> re.Pattern[bytes]:
    """Every member walletd reads for this command, quoted as in the body."""
    names = [*Incoming.__struct_fields__, *COMMAND_DATA[command].__struct_fields__]
    return re.compile(b'"(?:%b)"' % b"|".join(re.escape(name.encode()) for name in names))


# Per command, the member names whose repetition well_formed() must notice.
MEMBER_NAMES = {command: member_names(command) for command in COMMAND_DATA}


def suspicious(names: re.Pattern[bytes], body: bytes) -> bool:
    """Cheap pre-check (a few microseconds): could the body repeat a member
    walletd reads? msgspec keeps the last of two, so such a body must go to
    the exact check (duplicate_member). A name spelled with escapes, or
    quoted as a value, only costs the slow path."""
    if b"\\" in body:
        return True
    found = names.findall(body)
    return len(found) != len(set(found))


def well_formed(command: str, body: bytes) -> Any | None:
    """The typed envelope of a request that decodes cleanly, is valid UTF-8
    (msgspec skips unread members unchecked) and cannot repeat a member, else
    None: the member-by-member path (utf8_problem, envelope, duplicate_member,
    text_member, command_data) then names exactly what is wrong, in the order
    the checks are specified."""
    decoder = ENVELOPES.get(command)
    if decoder is None:
        return None
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError:
            return None
    if suspicious(MEMBER_NAMES[command], body):
        return None
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


class Members(list[tuple[str, Any]]):
    """A JSON object as its members in order, repeats kept (json's object_pairs_hook)."""


def parsed(text: str) -> Any:
    """text as JSON with objects as Members; None if Python's parser refuses it
    (then msgspec's decoder is the one to say what is wrong)."""
    try:
        return json.loads(text, object_pairs_hook=Members)
    except (ValueError, RecursionError):
        return None


def nodes(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every value in the tree, depth first, in body order."""
    yield path, value
    if isinstance(value, Members):
        for key, member in value:
            yield from nodes(member, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nodes(item, f"{path}[{index}]")


BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def utf8_problem(body: bytes) -> str | None:
    """None if the body is valid UTF-8, else what is wrong, naming the member
    that holds the bad byte (a reply echoing it would not be JSON)."""
    try:
        body.decode()
        return None
    except UnicodeDecodeError as exc:
        where = f"the request body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})"
    for path, value in nodes(parsed(body.decode(errors="surrogateescape"))):
        if isinstance(value, Members) and any(BAD_BYTE.search(key) for key, _ in value):
            return f"a member name in `{path or '(the body)'}` is not valid UTF-8: {where}"
        if isinstance(value, str) and BAD_BYTE.search(value):
            return f"`{path}` is not valid UTF-8: {where}"
    return where


def duplicate_member(body: bytes, command: str) -> str | None:
    """The first member walletd reads (the envelope's, and data's for this
    command) that appears twice in its object, if any; the body is valid
    UTF-8 already. Exactly what suspicious() screens for, so the answer does
    not depend on which path a body took."""
    tree = parsed(body.decode())
    if not isinstance(tree, Members):
        return None
    read = COMMAND_DATA[command].__struct_fields__ if command in COMMAND_DATA else ()
    data = [member for key, member in tree if key == "data" and isinstance(member, Members)]
    for path, members, names in [("", tree, Incoming.__struct_fields__), *[("data.", d, read) for d in data]]:
        keys = [key for key, _ in members if key in names]
        for index, key in enumerate(keys):
            if key in keys[:index]:
                return path + key
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


# Shared by every reply: its cache is per operator secret and status, renewed each second.
HEADS = ReplyHeads()


def echo_of(incoming: Incoming) -> bytes:
    return ENCODER.encode(incoming)


def reply(echo: bytes, secret_key: str, data: Any) -> bytes:
    """{"request": <the request as it came>, "response": {status, timestamp, hash, data}}."""
    status = "ERROR" if isinstance(data, ErrorReply) else "OK"
    return b'{"request":%b%b%b}}' % (echo, HEADS.head(secret_key, status), ENCODER.encode(data))


def refusal_reply(echo: bytes, secret_key: str, refusal: Refusal) -> bytes:
    return reply(echo, secret_key, ErrorReply(refusal.code, refusal.message))
