"""Player ids and aliases: the id alphabet, no alias shadowing a player id, cached aliases expire."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis

from app import wallet as wallet_module
from app.wallet import Wallet, WalletError
from tests.oia_calls import redis_state
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BAD_IDS = ["a{b", "a}b", "x}:acct:y", "a:b", "a|b", "a b", "a\tb", "a\nb", "x" * 65, "", "é", "a/b"]
GOOD_IDS = ["a", "x" * 64, "john.doe@example.com", "123e4567-e89b-12d3-a456-426614174000", "A_b-9"]


@pytest.mark.parametrize("player_id", BAD_IDS)
async def test_admin_api_refuses_ids_outside_the_alphabet(client: httpx.AsyncClient, sync_redis: redis.Redis,
                                                          player_id: str) -> None:
    before = redis_state(sync_redis)
    r = await client.post("/admin/players", json={"player_id": player_id, "currency": "EUR", "operator_id": OPERATOR},
                          headers=AUTH)
    assert r.status_code == 400, r.text
    assert "player_id" in r.json()["error"]
    assert redis_state(sync_redis) == before


@pytest.mark.parametrize("player_id", BAD_IDS)
async def test_wallet_refuses_ids_outside_the_alphabet(wallet: Wallet, sync_redis: redis.Redis,
                                                       player_id: str) -> None:
    before = redis_state(sync_redis)
    with pytest.raises(WalletError, match="player id"):
        await wallet.create_player(player_id, "EUR", 0, "", "en", "", [], operator_id=OPERATOR)
    assert redis_state(sync_redis) == before


@pytest.mark.parametrize("player_id", GOOD_IDS)
async def test_e_mails_and_uuids_fit(client: httpx.AsyncClient, wallet: Wallet, player_id: str) -> None:
    r = await client.post("/admin/players", json={"player_id": player_id, "currency": "EUR", "operator_id": OPERATOR},
                          headers=AUTH)
    assert r.status_code == 201, r.text
    assert await wallet.account(player_id) is not None


@pytest.mark.parametrize("alias", ["stargame:a}b", "stargame:x:y", "stargame:" + "9" * 65, "stargame:a b",
                                   "stargame:", "nocolon", "other:5"])
async def test_bad_aliases_are_refused(wallet: Wallet, sync_redis: redis.Redis, alias: str) -> None:
    before = redis_state(sync_redis)
    with pytest.raises(WalletError, match="alias"):
        await wallet.create_player("p", "EUR", 0, "", "en", "", [alias], operator_id=OPERATOR)
    assert redis_state(sync_redis) == before


@pytest.mark.slow
def test_cli_refuses_ids_outside_the_alphabet(tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    config = Server(tmp_path, redis_url).config
    for player_id in ["a{b", "x}:acct:y", "a|b", "a b", "x" * 65]:
        result = walletd(config, "player", "create", player_id, "--currency", "EUR", check=False)
        assert result.returncode == 1, result.stdout
        assert "1-64 characters of A-Z a-z 0-9 _ . @ -" in result.stderr
    assert not sync_redis.keys("*acct*")
    refused = walletd(config, "session", "new", "a}b", "--game", "1", check=False)
    assert refused.returncode == 1 and "player_id" in refused.stderr


# Aliases never shadow a player id (StarGame: a uid with no alias is the player id).

async def test_alias_equal_to_an_existing_player_id_is_refused(wallet: Wallet, sync_redis: redis.Redis) -> None:
    await wallet.create_player("117", "EUR", 100, "", "en", "", [], operator_id=OPERATOR)
    before = redis_state(sync_redis)
    with pytest.raises(WalletError, match=r"stargame:117 .*player 117"):
        await wallet.create_player("alice", "EUR", 0, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    assert redis_state(sync_redis) == before
    assert await wallet.resolve("stargame", "117") == "117"


async def test_alias_of_a_player_created_before_reservations_is_refused(wallet: Wallet,
                                                                        sync_redis: redis.Redis) -> None:
    await wallet.create_player("117", "EUR", 100, "", "en", "", [], operator_id=OPERATOR)
    sync_redis.delete(*sync_redis.keys("w:alias:*"))  # as made by an older walletd
    before = redis_state(sync_redis)
    with pytest.raises(WalletError, match=r"stargame:117 .*player 117"):
        await wallet.create_player("alice", "EUR", 0, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    assert redis_state(sync_redis) == before


async def test_player_id_equal_to_an_existing_alias_is_refused(wallet: Wallet, sync_redis: redis.Redis) -> None:
    await wallet.create_player("alice", "EUR", 100, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    before = redis_state(sync_redis)
    with pytest.raises(WalletError, match="alias stargame:117"):
        await wallet.create_player("117", "EUR", 0, "", "en", "", [], operator_id=OPERATOR)
    assert redis_state(sync_redis) == before
    assert await wallet.resolve("stargame", "117") == "alice"


async def test_concurrent_player_and_alias_creates_never_both_succeed(wallet: Wallet) -> None:
    for round_ in range(20):
        uid = f"{700 + round_}"
        results = await asyncio.gather(
            wallet.create_player(uid, "EUR", 0, "", "en", "", [], operator_id=OPERATOR),
            wallet.create_player(f"al{round_}", "EUR", 0, "", "en", "", [f"stargame:{uid}"], operator_id=OPERATOR),
            return_exceptions=True,
        )
        assert sum(isinstance(r, str) for r in results) == 1, results
        assert all(isinstance(r, (str, WalletError)) for r in results), results


async def test_recreating_a_player_keeps_its_aliases(wallet: Wallet) -> None:
    await wallet.create_player("alice", "EUR", 100, "", "en", "", ["stargame:5"], operator_id=OPERATOR)
    with pytest.raises(WalletError, match="player alice already exists"):
        await wallet.create_player("alice", "EUR", 0, "", "en", "", ["stargame:5", "stargame:6"],
                                   operator_id=OPERATOR)
    assert await wallet.resolve("stargame", "5") == "alice"
    assert await wallet.redis.get("w:alias:stargame:6") is None


async def test_released_alias_stops_routing(wallet: Wallet, sync_redis: redis.Redis,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    await wallet.create_player("alice", "EUR", 100, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    assert await wallet.resolve("stargame", "117") == "alice"
    sync_redis.delete("w:alias:stargame:117")  # released (by hand, or a failed create's clean-up)
    assert await wallet.resolve("stargame", "117") == "alice"  # cached: one GET per TTL, not per call
    later = wallet_module.time.monotonic() + wallet_module.ALIAS_HIT_TTL_S + 1
    monkeypatch.setattr(wallet_module.time, "monotonic", lambda: later)
    assert await wallet.resolve("stargame", "117") == "117"


async def test_an_alias_equal_to_the_own_id_is_harmless(wallet: Wallet, sync_redis: redis.Redis) -> None:
    await wallet.create_player("117", "EUR", 100, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    sync_redis.delete(*sync_redis.keys("w:alias:*"))  # as made by an older walletd
    with pytest.raises(WalletError, match="player 117 already exists"):
        await wallet.create_player("117", "EUR", 0, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
    assert await wallet.resolve("stargame", "117") == "117"
