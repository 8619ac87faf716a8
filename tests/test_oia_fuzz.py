"""Malformed OIA requests of every kind: HTTP 200, an exact OP code, and no state change."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.wallet import Wallet
from tests.oia_calls import change, envelope, new_session, post, redis_state, sha1
from tests.support import OPERATOR, SECRET

pytestmark = pytest.mark.anyio

PLAYER = "fz"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
with_pipe = st.text(max_size=10).map(lambda s: s + "|")
not_int = json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool) or v < 0)
too_many_digits = st.integers(10**20, 10**40)  # the spec's INT 20
# A transaction_id may also be a string of 1-20 ASCII digits (the same id).
not_id = (not_int.filter(lambda v: not (isinstance(v, str) and re.fullmatch("[0-9]{1,20}", v)))
          | too_many_digits | too_many_digits.map(str))
not_text = json_values.filter(lambda v: not isinstance(v, str)) | with_pipe
bad_amount = st.one_of(
    st.text(max_size=12).filter(lambda s: not s.replace(".", "", 1).isdigit()),
    st.integers(max_value=-1), st.floats(max_value=-0.01),
    st.integers(0, 10**6).map(lambda n: f"{n // 1000}.{n % 1000:03d}").filter(lambda s: not s.endswith("0")),
    st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
)
# Wrong values for each required changebalance field (a BET that would otherwise book).
WRONG = {
    # Not a string or integer at all (a string outside the id alphabet is OP_34: test_hostile_ids...).
    "user_id": json_values.filter(lambda v: not isinstance(v, (str, int)) or isinstance(v, bool)),
    "transaction_type": json_values.filter(lambda v: v not in ("BET", "WIN", "REFUND")),
    "transaction_id": not_id,
    "round_id": not_int | too_many_digits,
    "game_id": not_int | st.integers(10**6, 10**30),  # INT 6
    "currency_code": not_text.filter(lambda v: not isinstance(v, int)) | st.text(min_size=5, max_size=8),
    "amount": bad_amount,
    "token": not_text.filter(lambda v: v is not None),
    "round_finished": json_values.filter(lambda v: v is not None and not isinstance(v, bool)),
}


TOKEN = "TOKENxPLACEHOLDER"  # replaced by the live session's token before sending


@st.composite
def malformed(draw: st.DrawFn) -> tuple[bytes, str]:
    """(body, expected error code) for a changebalance that must be refused unbooked."""
    data = change(PLAYER, draw(st.integers(0, 10**6)), "BET", 1, token=TOKEN)
    kind = draw(st.sampled_from(["bytes", "json", "data", "field", "missing", "hash", "envelope", "twice",
                                 "utf8"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=60))
        try:
            json.loads(raw)
            return raw.replace(b"{", b"[") + b"}", "OP_50"  # never a valid object
        except ValueError:
            return raw, "OP_50"
    if kind == "json":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode(), "OP_50"
    body = envelope("changebalance", data)
    if kind == "data":
        body["data"] = draw(json_values.filter(lambda v: not isinstance(v, dict) or "user_id" not in v))
    elif kind == "field":
        field = draw(st.sampled_from(sorted(WRONG)))
        data[field] = draw(WRONG[field])
    elif kind == "missing":
        del data[draw(st.sampled_from(["user_id", "transaction_type", "transaction_id", "round_id", "game_id",
                                       "currency_code", "amount"]))]
    elif kind == "twice":  # a member read by walletd, twice: msgspec would keep the last
        field = draw(st.sampled_from(["user_id", "transaction_type", "transaction_id", "round_id", "game_id",
                                      "currency_code", "amount", "token"]))
        text = json.dumps(body).encode()
        member = b'"%b": %b' % (field.encode(), json.dumps(data[field]).encode())
        return text.replace(member, member + b", " + member, 1), "OP_50"
    elif kind == "utf8":  # a byte that is not UTF-8, in a member walletd does not even read
        data["context"] = {"reason": "BAD"}
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"]))
        return json.dumps(body).encode().replace(b"BAD", b"x" + bad + b"y"), "OP_50"
    elif kind == "hash":
        body["hash"] = draw(json_values.filter(lambda v: v != body["hash"] and v is not None))
        return json.dumps(body).encode(), "OP_20" if isinstance(body["hash"], str) else "OP_50"
    else:
        member = draw(st.sampled_from(["command", "request_timestamp"]))
        body[member] = draw(not_text.filter(lambda v: v is not None))
        body["hash"] = sha1(f"{body['command']}{body['request_timestamp']}{SECRET}")
    return json.dumps(body).encode(), "OP_50"


@pytest.fixture
async def session(wallet: Wallet, client: httpx.AsyncClient) -> str:
    await wallet.create_player(PLAYER, "EUR", 5000, "", "en", "", [], operator_id=OPERATOR)
    return await new_session(client, PLAYER)


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
async def test_malformed_changebalance_is_refused_unbooked(
    client: httpx.AsyncClient, session: str, sync_redis: redis.Redis, case: tuple[bytes, str]
) -> None:
    body, code = case[0].replace(TOKEN.encode(), session.encode()), case[1]
    before = redis_state(sync_redis)
    r = await post(client, "changebalance", body)
    assert r.status_code == 200
    answer = json.loads(r.content.decode("utf-8"))["response"]  # strict UTF-8 JSON, whatever came in
    assert answer["status"] == "ERROR"
    assert answer["data"]["error_code"] == code, (body, answer)
    assert answer["hash"] == sha1("ERROR" + answer["response_timestamp"] + SECRET)
    assert redis_state(sync_redis) == before


# Ids full of the characters that structure Redis keys ('{', '}', ':', '|') or whitespace.
STRUCTURE = "{}:| \t\n\r"
ALNUM = "abcXYZ019_.@-"
hostile = st.builds(lambda a, c, b: a + c + b, st.text(ALNUM, max_size=8),
                    st.text(STRUCTURE, min_size=1, max_size=3), st.text(ALNUM + STRUCTURE, max_size=8))
too_long_id = st.text(ALNUM, min_size=65, max_size=80)


@st.composite
def hostile_calls(draw: st.DrawFn) -> tuple[str, dict, str]:
    """(command, data, expected code) of a call carrying a hostile id; it must write nothing."""
    target = draw(st.sampled_from(["user_id", "transaction_id", "token"]))
    value = draw(hostile | too_long_id) if target == "user_id" else draw(hostile)
    tx = draw(st.integers(0, 10**6))
    if target == "user_id":
        command = draw(st.sampled_from(["balance", "changebalance", "status", "cancel", "finishround"]))
        data = {
            "balance": {"user_id": value, "token": TOKEN, "currency_code": "EUR"},
            "changebalance": change(value, tx, draw(st.sampled_from(["BET", "WIN", "REFUND"])), 1, token=TOKEN),
            "status": {"user_id": value, "transaction_id": tx},
            "cancel": {"user_id": value, "transaction_id": tx, "round_id": 1, "game_id": 200},
            "finishround": {"user_id": value, "round_id": 1, "game_id": 200},
        }[command]
        return command, data, "OP_34"
    if target == "transaction_id":
        command = draw(st.sampled_from(["changebalance", "status", "cancel"]))
        data = {
            "changebalance": change(PLAYER, 0, "WIN", 1),
            "status": {"user_id": PLAYER, "transaction_id": 0},
            "cancel": {"user_id": PLAYER, "transaction_id": 0, "round_id": 1, "game_id": 200},
        }[command]
        data["transaction_id"] = value
        return command, data, "OP_50"
    command = draw(st.sampled_from(["authenticate", "balance"]))
    data = {"authenticate": {"token": value}, "balance": {"user_id": PLAYER, "token": value, "currency_code": "EUR"}}
    return command, data[command], "OP_50" if "|" in value or len(value) > 50 else "OP_21"


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_calls())
async def test_hostile_ids_are_refused_and_write_nothing(
    client: httpx.AsyncClient, session: str, sync_redis: redis.Redis, case: tuple[str, dict, str]
) -> None:
    command, data, code = case
    data = {k: session if v == TOKEN else v for k, v in data.items()}
    before = redis_state(sync_redis)
    r = await post(client, command, envelope(command, data))
    assert r.status_code == 200
    answer = json.loads(r.content.decode("utf-8"))["response"]
    assert answer["status"] == "ERROR"
    assert answer["data"]["error_code"] == code, (data, answer)
    assert redis_state(sync_redis) == before


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tx=st.integers(0, 10**20 - 1), token=hostile.filter(lambda t: "|" not in t and len(t) <= 50))
async def test_a_hostile_bet_token_moves_nothing_and_names_no_key(
    client: httpx.AsyncClient, session: str, sync_redis: redis.Redis, tx: int, token: str
) -> None:
    before = redis_state(sync_redis)
    r = await post(client, "changebalance", envelope("changebalance", change(PLAYER, str(tx), "BET", 1, token=token)))
    answer = json.loads(r.content.decode("utf-8"))["response"]
    assert answer["data"]["error_code"] == "OP_21"  # recorded, as every session refusal
    after = redis_state(sync_redis)
    new = set(after) - set(before)
    # The refusal's records, its journal entry (stream, seq) and its late-retry filter bits only.
    assert all(":tx:" in key or ":round:" in key or ":seen:" in key for key in new), new
    journal = {key for key in after if key.endswith((":ledger", ":seq")) or ":seen:" in key}
    assert {k: v for k, v in after.items() if k not in new | journal} == {
        k: v for k, v in before.items() if k not in journal}  # no balance or session moved
    last = sync_redis.xrevrange(next(key for key in journal if key.endswith(":ledger")), count=1)[0][1]
    assert (last["kind"], last["amount"], last["code"]) == ("refusal", "0", "OP_21")
