"""Whatever the query string, StarGame gets a JSON answer and no money moves."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.wallet import Wallet
from tests.oia_calls import redis_state
from tests.support import OPERATOR

pytestmark = pytest.mark.anyio

# Anything but a plain digit string, so no generated writeBet can be valid.
not_an_amount = st.text(max_size=30).filter(lambda s: not (s.isascii() and s.isdigit()))
words = st.sampled_from(["cmd", "uid", "bet", "win", "foo", "x", ""])
values = st.one_of(st.sampled_from(["getBalance", "writeBet", "fz", "0"]), st.text(max_size=30))


@st.composite
def queries(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(words, values), max_size=6))
    pairs += [("bet", draw(not_an_amount))] * draw(st.integers(0, 2))
    raw = draw(st.booleans())
    parts = [f"{k}={v}" if raw else f"{quote(k)}={quote(v)}" for k, v in pairs]
    return "&".join(parts)


@pytest.fixture
async def rich(wallet: Wallet) -> Wallet:
    await wallet.create_player("fz", "EUR", 5000, "", "en", "", ["stargame:0"], operator_id=OPERATOR)
    return wallet


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries())
async def test_fuzzed_queries_never_500_and_never_move_money(
    client: httpx.AsyncClient, rich: Wallet, query: str
) -> None:
    try:
        r = await client.get("/stargame?" + query)
    except httpx.InvalidURL:
        return  # not sendable as an HTTP request at all
    assert r.status_code == 200
    body = r.json()
    assert body["status"] in ("success", "fail")
    assert body["status"] == "fail" or "getBalance" in query
    account = await rich.account("fz")
    assert account is not None and account.balance_minor == 5000


# Hostile ids (key separators, hash tags, whitespace, non-ASCII) and valid-looking ones.
hostile_uids = st.one_of(
    st.text(alphabet=st.sampled_from("{}:|\t \nAb0.@-_é"), min_size=1, max_size=12),
    st.sampled_from(["x}:acct:y", "{p1}", "jp", "fz", "0"]),
)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
# 10.50 yen and the like: never representable in JPY.
yen_fractions = st.integers(0, 10**12).filter(lambda n: n % 100 != 0).map(str)


@st.composite
def refused_requests(draw: st.DrawFn) -> tuple[str, str]:
    """(method, query) that walletd must refuse: a wrong method, a uid outside the
    alphabet, or a JPY amount that is not a whole number of yen."""
    kind = draw(st.sampled_from(["method", "uid", "units"]))
    cmd = draw(st.sampled_from(["getBalance", "writeBet"]))
    uid, bet, win = "jp", draw(yen_fractions), draw(yen_fractions)
    method = "GET"
    if kind == "method":
        method = draw(methods.filter(lambda m: m != "GET"))
        bet, win = "0", "10000"
    elif kind == "uid":
        uid = draw(hostile_uids.filter(lambda u: u not in ("jp", "fz", "0")))
        bet, win = "0", "10000"
    elif kind == "units":
        cmd = "writeBet"
        bet = draw(st.sampled_from([bet, "0", "10000"]))
    return method, f"cmd={cmd}&uid={quote(uid)}&bet={bet}&win={win}"


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=refused_requests())
async def test_wrong_methods_hostile_uids_and_fractional_units_change_nothing(
    client: httpx.AsyncClient, rich: Wallet, sync_redis: redis.Redis, case: tuple[str, str]
) -> None:
    if not sync_redis.keys("*:acct:jp"):
        await rich.create_player("jp", "JPY", 1000, "", "en", "", [], operator_id=OPERATOR)
    method, query = case
    before = redis_state(sync_redis)
    r = await client.request(method, "/stargame?" + query)
    after = redis_state(sync_redis)
    assert after == before, (method, query)
    if method != "GET":
        assert r.status_code == 405
        return
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "fail" or "getBalance" in query, (query, body)
