"""StarGame Game Notifications API: GET ?cmd=getBalance|writeBet."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl

import msgspec

from app import currency
from app.allowlist import AllowList
from app.asgi import JSON_TYPE, Receive, Scope, Send, client_host
from app.callback_meter import DEADLINE, OUTCOME_UNKNOWN, UNKNOWN_COMMAND, CallbackMeter
from app.callbacks import Answered, Callback
from app.errors import ConnectionFailed, OutcomeUnknown, WalletCallError, WalletUnavailable
from app.ids import PLAYER_ID_MAX_LEN, is_player_id
from app.ledger.guard import ColdStart
from app.logfields import in_call
from app.logsafe import RateLimitedLog, quoted
from app.money import AMOUNT_MINOR_LIMIT, AmountError, parse_minor
from app.protocols.stargame.journal import Journal, JournalFull, Note
from app.protocols.stargame.wallet import REQUEST_IDS, Booking, book
from app.redis_link import CALL_DEADLINE_MS, RedisLink
from app.settings import StarGameSettings
from app.wallet import Account, Wallet

log = logging.getLogger("walletd.stargame")
# For what a caller can provoke at will (403s) or an outage repeats per request.
limited_log = RateLimitedLog(log)

# A StarGame uid is looked up as a stargame alias first (app/wallet.py resolve).
ALIAS_KIND = "stargame"
# The refusal text for a uid that cannot be a player id.
UID_RULE = f"uid must be 1-{PLAYER_ID_MAX_LEN} characters of A-Z a-z 0-9 _ . @ -"
# StarGame counts money in hundredths of the currency unit ("cents").
CENTS_PER_UNIT = 100
# Players' currencies (they never change; the booking script checks anyway).
CURRENCY_CACHE_MAX = 100_000
# Names no currency: the script answers CURRENCY with the account's, books nothing.
CURRENCY_NOT_KNOWN = "?"
# Account languages answered as "RUS"; StarGame knows only RUS and ENG.
RUSSIAN = frozenset({"ru", "rus", "russian"})
# The booking script's refusal codes, in the words the fail answer gives.
REFUSALS = {
    "FUNDS": "insufficient funds",
    "BLOCKED": "player is blocked",
    "LATE": "deadline passed before booking; nothing booked",
    "OVERFLOW": "balance would exceed the supported range",
    "BACKLOG": "ledger backlog full; nothing booked",
    "CURRENCY": "player's currency changed during the request; nothing booked",
    "SETTLED": "request already settled; nothing booked",
}
# The metrics' code label of each booking refusal (app/callback_meter.py).
REFUSAL_CODES = {"FUNDS": "insufficient_funds", "BLOCKED": "blocked", "LATE": DEADLINE, "OVERFLOW": "overflow",
                 "BACKLOG": "backlog", "CURRENCY": "currency_changed", "SETTLED": "settled"}
# Outcome keys are the code labels: "success", each way to fail, and the two refusals
# the metrics count apart (a spent budget; a lost or late Redis reply).
BAD_REQUEST = "bad_request"
OUTCOMES = {code: (code, code if code in (DEADLINE, OUTCOME_UNKNOWN) else "") for code in (
    "success", "forbidden", "method_not_allowed", BAD_REQUEST, "unknown_player", *REFUSAL_CODES.values(),
    OUTCOME_UNKNOWN, "unavailable", "journal_full", "internal")}
COMMANDS = ("getBalance", "writeBet")
# A lost reply: the reconciler reverses a booking that did land (app/protocols/stargame/reconciler.py).
ANSWER_UNKNOWN = "wallet timeout: outcome unknown; a booking that landed will be reversed"
# One encoder for every answer: reused, not built per call.
ENCODER = msgspec.json.Encoder()
# A 405's extra header; it comes first, as Starlette sent it (answers stay byte for byte).
ALLOW_GET = (b"allow", b"GET")


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
    """A fail answer with this text; outcome: its key in OUTCOMES."""

    def __init__(self, text: str, outcome: str = BAD_REQUEST) -> None:
        super().__init__(text)
        self.outcome = outcome


class Unanswerable(Exception):
    """A booking's outcome is unknown: noted for the reconciler, answered fail."""


def fail(error: str) -> bytes:
    return ENCODER.encode(Fail("fail", error))


# What an operator reads when bookings stop at wallet.backlog_max (once a minute, with a count).
BACKLOG_LOG = ("stargame: a partition's ledger backlog is full (wallet.backlog_max entries not yet in the ledger "
               "store: is the store down or the flusher stopped? its log says why); writeBets refused unbooked "
               "until the flusher catches up")
# Constant answers, encoded once.
FORBIDDEN = fail("forbidden")
METHOD_NOT_ALLOWED = fail("method not allowed: use GET")


async def respond(send: Send, body: bytes, status: int = 200, allow: bool = False) -> None:
    headers = [(b"content-length", b"%d" % len(body)), JSON_TYPE]
    if allow:
        headers.insert(0, ALLOW_GET)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def to_cents(balance_minor: int, currency_code: str) -> int:
    """A balance in StarGame cents, rounded down: never shows more than the player has
    (1.234 BHD is 123 cents)."""
    return balance_minor * CENTS_PER_UNIT // 10 ** currency.exponent(currency_code)


def to_minor(cents: int, currency_code: str, field: str) -> int:
    """StarGame cents in the currency's minor units, exactly, or a refusal
    (10.50 yen is not an amount of JPY)."""
    scaled = cents * 10 ** currency.exponent(currency_code)
    if scaled % CENTS_PER_UNIT:
        raise Refused(f"{field}={cents} is not a whole number of {currency_code} minor units")
    minor = scaled // CENTS_PER_UNIT
    if minor >= AMOUNT_MINOR_LIMIT:
        raise Refused(f"{field} is out of range")
    return minor


def reply(status: str, error: str, uid: str, account: Account) -> bytes:
    language = "RUS" if account.language.lower() in RUSSIAN else "ENG"
    body = Reply(status, error, uid, to_cents(account.balance_minor, account.currency), account.currency,
                 currency.numeric(account.currency), language)
    return ENCODER.encode(body)


Query = list[tuple[str, str]]


def query_of(scope: Scope) -> Query:
    """The query's (name, value) pairs, parsed as Starlette's query_params were."""
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


def single(query: Query, name: str, required: bool = True) -> str | None:
    values = [value for key, value in query if key == name]
    if len(values) > 1:
        raise Refused(f"parameter {name} given more than once")
    if not values:
        if required:
            raise Refused(f"missing parameter {name}")
        return None
    return values[0]


def uid_of(query: Query) -> str:
    uid = single(query, "uid")
    assert uid is not None
    if not is_player_id(uid):  # it becomes part of a key name (alias or account)
        raise Refused(UID_RULE)
    return uid


def amount(query: Query, name: str) -> int:
    try:
        return parse_minor(single(query, name), name)
    except AmountError as exc:
        raise Refused(str(exc)) from exc


class StarGame:
    def __init__(self, wallet: Wallet, settings: StarGameSettings, journal: Journal, link: RedisLink,
                 guard: ColdStart, *, wait_ms: int = 0) -> None:
        # A writeBet is booked no later than this before the budget ends: the replicas'
        # WAIT may take it after the script (app/settings.py replica_wait_ms).
        self.wait_ms = wait_ms
        self.link = link  # an outage it has logged needs no line per call here
        self.guard = guard  # its refusal ('' = serve) fails every call (Redis behind the store)
        self.wallet = wallet
        self.settings = settings
        self.journal = journal
        self.allowed = AllowList(settings.allowed_ips)
        self.currencies: dict[str, str] = {}  # player id -> ISO code
        self.meter = CallbackMeter("stargame", COMMANDS, OUTCOMES)

    def callbacks(self) -> list[Callback]:
        """GET <path>?cmd=...; every method comes here: a HEAD writeBet must not book."""
        return [Callback(self.settings.path, self.handle, meter=self.meter)]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Answered:
        """A raw ASGI handler (app/callbacks.py); the request's body, if any, is never read."""
        arrived_ms = int(time.time() * 1000)
        CALL_DEADLINE_MS.set(arrived_ms + self.settings.budget_ms)
        if scope["method"] != "GET":
            await respond(send, METHOD_NOT_ALLOWED, 405, allow=True)
            return UNKNOWN_COMMAND, "method_not_allowed"
        client = client_host(scope)
        if not self.allowed.allows(client):
            limited_log.warning("forbidden", "stargame call from %s refused: not in stargame.allowed_ips",
                                quoted(client))
            await respond(send, FORBIDDEN, 403)
            return UNKNOWN_COMMAND, "forbidden"
        answer, cmd, outcome = await self.answer(scope, arrived_ms)
        await respond(send, answer)
        return cmd, outcome

    async def answer(self, scope: Scope, arrived_ms: int) -> tuple[bytes, str, str]:
        """The answer, the command it was for (as the request named it) and its outcome key."""
        if self.guard.refusal:  # refused before the query is read: its command is not known
            return fail(f"wallet unavailable: {self.guard.refusal}; nothing booked"), UNKNOWN_COMMAND, "unavailable"
        cmd: str | None = UNKNOWN_COMMAND
        try:
            query = query_of(scope)
            cmd = single(query, "cmd")
            if cmd == "getBalance":
                return await self.get_balance(query), "getBalance", "success"
            if cmd == "writeBet":
                answer, outcome = await self.write_bet(query, arrived_ms + self.settings.budget_ms - self.wait_ms)
                return answer, "writeBet", outcome
            raise Refused(f"unknown cmd {cmd!r}")
        except Refused as exc:
            return fail(str(exc)), cmd or UNKNOWN_COMMAND, exc.outcome
        except Unanswerable:
            return fail(ANSWER_UNKNOWN), cmd or UNKNOWN_COMMAND, OUTCOME_UNKNOWN
        except OutcomeUnknown:
            # Only reads get here (a booking's time-out is Unanswerable): nothing booked.
            limited_log.error("timeout", "stargame %s: Redis timed out",
                              quoted(scope["query_string"].decode(errors="replace")))
            return fail("wallet timeout"), cmd or UNKNOWN_COMMAND, OUTCOME_UNKNOWN
        except (WalletCallError, OSError) as exc:  # unavailable, refused, connection failed
            # An outage fails every call the same way: the link's line, else one a minute.
            if not (self.link.down and isinstance(exc, (WalletUnavailable, ConnectionFailed))):
                limited_log.error(f"unavailable-{type(exc).__name__}", "stargame: wallet unavailable: %s", quoted(exc))
            return fail("wallet unavailable"), cmd or UNKNOWN_COMMAND, "unavailable"
        except Exception:
            log.exception("stargame: internal error")
            return fail("internal error"), cmd or UNKNOWN_COMMAND, "internal"

    async def get_balance(self, query: Query) -> bytes:
        in_call(None, "getBalance")  # every line logged from here on names the call (app/logfields.py)
        uid = uid_of(query)
        single(query, "foo", required=False)  # cache buster: present or not, unused
        player_id = await self.player_of(uid)
        account = await self.wallet.account(player_id)
        if account is None:
            raise Refused("unknown player", "unknown_player")
        self.remember_currency(player_id, account.currency)
        return reply("success", "", uid, account)

    async def player_of(self, uid: str) -> str:
        """The uid's alias, else the uid itself; never a player id that could not name a key."""
        player_id = await self.wallet.resolve(ALIAS_KIND, uid)
        if not is_player_id(player_id):
            log.error("stargame alias %s names an invalid player id %s", quoted(uid), quoted(player_id))
            raise Refused("alias names an invalid player id", "internal")
        return player_id

    def remember_currency(self, player_id: str, currency_code: str) -> None:
        if len(self.currencies) >= CURRENCY_CACHE_MAX:
            self.currencies.clear()
        self.currencies[player_id] = currency_code

    async def write_bet(self, query: Query, deadline_ms: int) -> tuple[bytes, str]:
        """The answer and its outcome key."""
        uid = uid_of(query)
        bet_cents, win_cents = amount(query, "bet"), amount(query, "win")
        if int(time.time() * 1000) > deadline_ms:  # already late: no Redis call at all
            raise Refused(REFUSALS["LATE"], DEADLINE)
        player_id = await self.player_of(uid)
        if not self.journal.has_room():
            limited_log.error("journal", "stargame: the reconciliation journal cannot take a note (%s; is the "
                              "flusher's process running? is data_dir writable?); writeBets refused unbooked",
                              self.journal.problem)
            raise Refused("wallet unavailable: reconciliation journal full or not writable; nothing booked",
                          "journal_full")
        request_id = REQUEST_IDS.new()
        in_call(None, "writeBet", request_id)  # every line logged from here on names the call
        # The currency is known after the first call for a player (getBalance comes
        # first in a session); on a miss the script answers CURRENCY without booking.
        currency_code = self.currencies.get(player_id)
        booking = None
        for _ in range(2):
            if int(time.time() * 1000) > deadline_ms:
                raise Refused(REFUSALS["LATE"], DEADLINE)
            bet, win = (0, 0) if currency_code is None else (
                to_minor(bet_cents, currency_code, "bet"), to_minor(win_cents, currency_code, "win"))
            note = Note(request_id, player_id, uid, bet_cents, win_cents, 0)
            booking = await self.book(note, bet, win, deadline_ms, currency_code or CURRENCY_NOT_KNOWN)
            if booking.account is None:
                raise Refused("unknown player", "unknown_player")
            if booking.code != "CURRENCY":
                break
            currency_code = booking.account.currency
            self.remember_currency(player_id, currency_code)
        assert booking is not None and booking.account is not None
        if booking.code != "OK":
            if booking.code == "BACKLOG":
                limited_log.error("backlog", BACKLOG_LOG)
            return reply("fail", REFUSALS[booking.code], uid, booking.account), REFUSAL_CODES[booking.code]
        return reply("success", "", uid, booking.account), "success"

    async def book(self, note: Note, bet: int, win: int, deadline_ms: int, currency_code: str) -> Booking:
        """One booking call; if its outcome is unknown, the request is noted durably
        (before the answer) for the reconciler, and Unanswerable raised."""
        try:
            return await book(
                self.wallet, note.player_id, bet, win, deadline_ms, currency_code,
                request_id=note.request_id, retention_s=self.settings.request_retention_s)
        except OutcomeUnknown as exc:
            await self.note_unknown(msgspec.structs.replace(note, ts_ms=int(time.time() * 1000)), exc)
            raise Unanswerable from exc

    async def note_unknown(self, note: Note, exc: Exception) -> None:
        try:
            await asyncio.to_thread(self.journal.note, note)
        except (OSError, JournalFull) as failure:
            log.critical("stargame request %s (player %s, bet %d, win %d cents): outcome unknown (%s) and it could "
                         "not be noted (%s): if it booked, reverse it by hand (ledger ref %s)",
                         note.request_id, note.player_id, note.bet_cents, note.win_cents, quoted(exc),
                         quoted(failure), note.request_id)
            return
        log.warning("stargame request %s (player %s, bet %d, win %d cents): outcome unknown (%s); answered fail "
                    "and noted for the reconciler", note.request_id, note.player_id, note.bet_cents,
                    note.win_cents, quoted(exc))
