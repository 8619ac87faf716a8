"""StarGame Game Notifications API: every cmd and every refusal, against real Redis."""

from __future__ import annotations

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from app.web import create_app
from tests.support import OPERATOR, balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio

SUCCESS_KEYS = ["status", "error", "userLogin", "cash", "currencyname", "currencyiso", "language"]


@pytest.fixture
async def players(wallet: Wallet) -> None:
    await wallet.create_player("p-rub", "RUB", 295071, "RU", "ru", "Ivan", ["stargame:117"], operator_id=OPERATOR)
    await wallet.create_player("p-eur", "EUR", 5000, "DE", "de", "Hans", [], operator_id=OPERATOR)


async def test_get_balance_by_alias_matches_the_seed_example(client: httpx.AsyncClient, players: None) -> None:
    r = await client.get("/stargame", params={"cmd": "getBalance", "uid": "117", "foo": "42"})
    assert r.status_code == 200
    assert list(r.json()) == SUCCESS_KEYS  # field order as in the manual
    assert r.json() == {"status": "success", "error": "", "userLogin": "117", "cash": 295071,
                        "currencyname": "RUB", "currencyiso": "643", "language": "RUS"}


async def test_get_balance_by_player_id_without_foo(client: httpx.AsyncClient, players: None) -> None:
    r = await client.get("/stargame", params={"cmd": "getBalance", "uid": "p-eur"})
    assert r.json() == {"status": "success", "error": "", "userLogin": "p-eur", "cash": 5000,
                        "currencyname": "EUR", "currencyiso": "978", "language": "ENG"}


async def test_write_bet_debits_and_records_one_entry(
    client: httpx.AsyncClient, players: None, wallet: Wallet, settings: Settings
) -> None:
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "117", "bet": "10", "win": "0"})
    assert r.json()["status"] == "success"
    assert r.json()["cash"] == 295061
    assert await balance_of(wallet, "p-rub") == 295061
    await drain(settings)
    bets = ledger_rows(settings, "player_id = ? AND kind = 'bet'", ("p-rub",))
    assert [(b["amount_minor"], b["balance_after_minor"], b["source"]) for b in bets] == [(-10, 295061, "stargame")]


async def test_write_bet_with_win_books_debit_then_credit(
    client: httpx.AsyncClient, players: None, wallet: Wallet, settings: Settings
) -> None:
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "p-eur", "bet": "1000", "win": "2500"})
    assert r.json()["cash"] == 6500
    await drain(settings)
    rows = ledger_rows(settings, "player_id = ? AND kind != 'open'", ("p-eur",))
    assert [(x["kind"], x["amount_minor"], x["balance_after_minor"]) for x in rows] == [
        ("bet", -1000, 4000), ("win", 2500, 6500)]


async def test_win_notification_credits(client: httpx.AsyncClient, players: None, wallet: Wallet) -> None:
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "p-eur", "bet": "0", "win": "1000"})
    assert r.json()["status"] == "success"
    assert await balance_of(wallet, "p-eur") == 6000


async def test_insufficient_funds_fails_and_moves_nothing_even_with_a_win(
    client: httpx.AsyncClient, players: None, wallet: Wallet, settings: Settings
) -> None:
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "p-eur", "bet": "5001", "win": "9000"})
    body = r.json()
    assert r.status_code == 200
    assert body["status"] == "fail"
    assert body["error"] == "insufficient funds"
    assert body["cash"] == 5000
    assert await balance_of(wallet, "p-eur") == 5000
    await drain(settings)
    assert [x["kind"] for x in ledger_rows(settings, "player_id = ?", ("p-eur",))] == ["open"]


async def test_bet_of_whole_balance_is_allowed(client: httpx.AsyncClient, players: None, wallet: Wallet) -> None:
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "p-eur", "bet": "5000", "win": "0"})
    assert r.json()["cash"] == 0


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"uid": "117"}, "missing parameter cmd"),
        ({"cmd": "deposit", "uid": "117"}, "unknown cmd 'deposit'"),
        ({"cmd": "getBalance"}, "missing parameter uid"),
        ({"cmd": "getBalance", "uid": ""}, "uid must be"),
        ({"cmd": "getBalance", "uid": "nobody"}, "unknown player"),
        ({"cmd": "writeBet", "uid": "nobody", "bet": "1", "win": "0"}, "unknown player"),
        ({"cmd": "writeBet", "uid": "117", "win": "0"}, "missing parameter bet"),
        ({"cmd": "writeBet", "uid": "117", "bet": "1"}, "missing parameter win"),
        ({"cmd": "writeBet", "uid": "117", "bet": "", "win": "0"}, "missing bet"),
        ({"cmd": "writeBet", "uid": "117", "bet": "-5", "win": "0"}, "bet must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": "1.5", "win": "0"}, "bet must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": "1e3", "win": "0"}, "bet must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": " 5", "win": "0"}, "bet must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": "0x10", "win": "0"}, "bet must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": "0", "win": "NaN"}, "win must be a non-negative integer"),
        ({"cmd": "writeBet", "uid": "117", "bet": "0", "win": str(2**53)}, "win is out of range"),
        ({"cmd": "writeBet", "uid": "117", "bet": "0", "win": "9" * 40}, "win must be a non-negative integer"),
    ],
)
async def test_refusals_name_the_problem_and_move_nothing(
    client: httpx.AsyncClient, players: None, wallet: Wallet, sync_redis: redis.Redis,
    params: dict, error: str,
) -> None:
    seq_key = wallet.keys.seq(wallet.keys.partition("p-rub"))
    before = sync_redis.get(seq_key)
    r = await client.get("/stargame", params=params)
    assert r.status_code == 200
    assert r.json()["status"] == "fail"
    assert error in r.json()["error"]
    assert await balance_of(wallet, "p-rub") == 295071
    assert sync_redis.get(seq_key) == before


async def test_a_parameter_given_twice_is_refused(client: httpx.AsyncClient, players: None, wallet: Wallet) -> None:
    r = await client.get("/stargame?cmd=writeBet&uid=117&bet=1&bet=100&win=0")
    assert r.json() == {"status": "fail", "error": "parameter bet given more than once"}
    assert await balance_of(wallet, "p-rub") == 295071


async def test_win_that_would_pass_2_pow_53_is_refused(client: httpx.AsyncClient, wallet: Wallet) -> None:
    await wallet.create_player("whale", "EUR", 2**53 - 10, "", "en", "", [], operator_id=OPERATOR)
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "whale", "bet": "0", "win": "10"})
    assert r.json()["status"] == "fail"
    assert "range" in r.json()["error"]
    assert await balance_of(wallet, "whale") == 2**53 - 10


async def test_a_request_past_its_deadline_books_nothing(
    settings: Settings, wallet: Wallet
) -> None:
    await wallet.create_player("late", "EUR", 1000, "", "en", "", [], operator_id=OPERATOR)
    settings.stargame.budget_ms = -1  # every request arrives already late
    app = create_app(settings, settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        r = await c.get("/stargame", params={"cmd": "writeBet", "uid": "late", "bet": "100", "win": "0"})
    assert r.json()["status"] == "fail"
    assert "deadline" in r.json()["error"]
    assert await balance_of(wallet, "late") == 1000


def command_calls(sync_redis: redis.Redis) -> int:
    stats = sync_redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.1", "::ffff:10.0.0.7", "2001:db8::1", "not-an-ip"])
async def test_callers_outside_the_allow_list_get_403_and_never_reach_redis(
    settings: Settings, players: None, sync_redis: redis.Redis, wallet: Wallet, address: str
) -> None:
    app = create_app(settings, settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=(address, 5555))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        before = command_calls(sync_redis)
        r = await c.get("/stargame", params={"cmd": "writeBet", "uid": "117", "bet": "0", "win": "100000"})
        after = command_calls(sync_redis)
    assert r.status_code == 403
    assert r.json()["status"] == "fail"
    assert after == before
    assert await balance_of(wallet, "p-rub") == 295071


async def test_allow_list_accepts_networks(settings: Settings, players: None) -> None:
    settings.stargame.allowed_ips = ["10.20.0.0/16"]
    app = create_app(settings, settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=("10.20.3.4", 5555))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        r = await c.get("/stargame", params={"cmd": "getBalance", "uid": "117", "foo": "1"})
    assert r.json()["status"] == "success"


async def test_healthz_is_200_with_redis_up(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok")


async def test_a_blocked_player_cannot_bet_but_sees_the_balance(client: httpx.AsyncClient, wallet: Wallet,
                                                                players: None) -> None:
    await wallet.set_blocked("p-eur", True)
    r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "p-eur", "bet": "100", "win": "0"})
    assert r.json()["status"] == "fail" and r.json()["error"] == "player is blocked"
    assert r.json()["cash"] == 5000
    r = await client.get("/stargame", params={"cmd": "getBalance", "uid": "p-eur"})
    assert r.json()["status"] == "success"


# --- units: StarGame counts hundredths of the currency unit (issue 9 item 2) ---

@pytest.fixture
async def world(wallet: Wallet) -> None:
    """Players in currencies with 0, 2 and 3 decimals."""
    await wallet.create_player("p-jpy", "JPY", 1000, "JP", "ja", "", [], operator_id=OPERATOR)  # 1000 yen
    await wallet.create_player("p-bhd", "BHD", 1234, "BH", "ar", "", [], operator_id=OPERATOR)  # 1.234 dinar
    await wallet.create_player("p-eur", "EUR", 5000, "DE", "de", "", [], operator_id=OPERATOR)


async def sg(client: httpx.AsyncClient, **params: str) -> dict:
    r = await client.get("/stargame", params=params)
    assert r.status_code == 200
    return r.json()


async def test_cash_is_in_hundredths_of_the_currency_unit(client: httpx.AsyncClient, world: None) -> None:
    assert (await sg(client, cmd="getBalance", uid="p-jpy"))["cash"] == 100_000
    assert (await sg(client, cmd="getBalance", uid="p-eur"))["cash"] == 5000


async def test_cash_of_a_balance_between_cents_is_rounded_down(client: httpx.AsyncClient, world: None) -> None:
    # 1.234 BHD is 123.4 StarGame cents: shown as 123, never more than the player has.
    assert (await sg(client, cmd="getBalance", uid="p-bhd"))["cash"] == 123


async def test_jpy_bet_and_win_are_converted_exactly(
    client: httpx.AsyncClient, world: None, wallet: Wallet, settings: Settings
) -> None:
    body = await sg(client, cmd="writeBet", uid="p-jpy", bet="10000", win="2500")  # 100 yen, 25 yen
    assert (body["status"], body["cash"]) == ("success", 92_500)
    assert await balance_of(wallet, "p-jpy") == 925
    await drain(settings)
    rows = ledger_rows(settings, "player_id = ? AND kind != 'open'", ("p-jpy",))
    assert [(x["kind"], x["amount_minor"]) for x in rows] == [("bet", -100), ("win", 25)]


async def test_bhd_amounts_scale_by_ten(client: httpx.AsyncClient, world: None, wallet: Wallet) -> None:
    body = await sg(client, cmd="writeBet", uid="p-bhd", bet="100", win="7")  # 1.000 BHD, 0.070 BHD
    assert body["status"] == "success"
    assert await balance_of(wallet, "p-bhd") == 1234 - 1000 + 70
    assert body["cash"] == 30  # 0.304 BHD shown as 30 cents


@pytest.mark.parametrize(("field", "other"), [("bet", "win"), ("win", "bet")])
async def test_an_amount_not_representable_in_the_currency_fails_and_moves_nothing(
    client: httpx.AsyncClient, world: None, wallet: Wallet, sync_redis: redis.Redis, field: str, other: str
) -> None:
    seq_key = wallet.keys.seq(wallet.keys.partition("p-jpy"))
    before = sync_redis.get(seq_key)
    body = await sg(client, cmd="writeBet", uid="p-jpy", **{field: "1050", other: "0"})  # 10.50 yen
    assert body["status"] == "fail"
    assert field in body["error"] and "JPY" in body["error"]
    assert await balance_of(wallet, "p-jpy") == 1000
    assert sync_redis.get(seq_key) == before


async def test_an_amount_past_2_pow_53_after_scaling_is_refused(client: httpx.AsyncClient, wallet: Wallet) -> None:
    await wallet.create_player("p-clf", "CLF", 0, "", "en", "", [], operator_id=OPERATOR)  # 4 decimals: x100
    body = await sg(client, cmd="writeBet", uid="p-clf", bet="0", win=str(2**53 // 100 + 1))
    assert body["status"] == "fail" and "range" in body["error"]
    assert await balance_of(wallet, "p-clf") == 0


# --- methods (issue 9 item 11) ---

@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_anything_but_get_answers_405_and_moves_nothing(
    client: httpx.AsyncClient, world: None, wallet: Wallet, sync_redis: redis.Redis, method: str
) -> None:
    seq_key = wallet.keys.seq(wallet.keys.partition("p-eur"))
    before = sync_redis.get(seq_key)
    r = await client.request(method, "/stargame?cmd=writeBet&uid=p-eur&bet=100&win=0")
    assert r.status_code == 405
    assert await balance_of(wallet, "p-eur") == 5000
    assert sync_redis.get(seq_key) == before


# --- ids (issue 9 items 6 and 8) ---

@pytest.mark.parametrize("uid", ["x}:acct:y", "{p1}", "a:b", "a|b", "a b", "a\tb", "a\nb", "é", "x" * 65])
async def test_a_uid_outside_the_alphabet_fails_and_writes_nothing(
    client: httpx.AsyncClient, world: None, sync_redis: redis.Redis, uid: str
) -> None:
    keys_before = sorted(sync_redis.keys("*"))
    for params in ({"cmd": "getBalance", "uid": uid}, {"cmd": "writeBet", "uid": uid, "bet": "0", "win": "100"}):
        body = await sg(client, **params)
        assert body == {"status": "fail", "error": "uid must be 1-64 characters of A-Z a-z 0-9 _ . @ -"}
    assert sorted(sync_redis.keys("*")) == keys_before


async def test_an_alias_to_a_player_id_outside_the_alphabet_is_refused(
    client: httpx.AsyncClient, world: None, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    sync_redis.set(wallet.keys.alias("stargame", "900"), "x}:acct:y")  # written by hand, or by an old walletd
    body = await sg(client, cmd="writeBet", uid="900", bet="0", win="100")
    assert body["status"] == "fail" and "player id" in body["error"]
    assert sync_redis.keys("*x}*") == []



async def test_refusals_of_unlisted_callers_are_rate_limited_in_the_log(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5555))
    caplog.set_level("INFO", logger="walletd.stargame")
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        for _ in range(20):
            assert (await c.get("/stargame", params={"cmd": "getBalance", "uid": "117"})).status_code == 403
    assert len([r for r in caplog.records if r.name == "walletd.stargame"]) <= 1
