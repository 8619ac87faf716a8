"""Malformed OIA requests of every kind: HTTP 200, an exact OP code, and no state change."""

from __future__ import annotations

import json

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.wallet import Wallet
from tests.conftest import OPERATOR, SECRET
from tests.oia_calls import change, envelope, new_session, post, redis_state, sha1

pytestmark = pytest.mark.anyio

PLAYER = "fz"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
with_pipe = st.text(max_size=10).map(lambda s: s + "|")
not_int = json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool) or v < 0)
not_text = json_values.filter(lambda v: not isinstance(v, str)) | with_pipe
bad_amount = st.one_of(
    st.text(max_size=12).filter(lambda s: not s.replace(".", "", 1).isdigit()),
    st.integers(max_value=-1), st.floats(max_value=-0.01),
    st.integers(0, 10**6).map(lambda n: f"{n // 1000}.{n % 1000:03d}").filter(lambda s: not s.endswith("0")),
    st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
)
# Wrong values for each required changebalance field (a BET that would otherwise book).
WRONG = {
    "user_id": not_text.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)),
    "transaction_type": json_values.filter(lambda v: v not in ("BET", "WIN", "REFUND")),
    "transaction_id": not_int,
    "round_id": not_int,
    "game_id": not_int,
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
    kind = draw(st.sampled_from(["bytes", "json", "data", "field", "missing", "hash", "envelope"]))
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
    answer = r.json()["response"]
    assert answer["status"] == "ERROR"
    assert answer["data"]["error_code"] == code, (body, answer)
    assert answer["hash"] == sha1("ERROR" + answer["response_timestamp"] + SECRET)
    assert redis_state(sync_redis) == before
