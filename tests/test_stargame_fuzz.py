"""Whatever the query string, StarGame gets a JSON answer and no money moves."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.wallet import Wallet

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
    await wallet.create_player("fz", "EUR", 5000, "", "en", "", ["stargame:0"])
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
