"""Operator ownership (issue 9 item 5) on the amount-precision path (item 10): an amount
the currency cannot hold, for another operator's player, must not tell that operator
that the player exists, nor in which currency ("from that operator's side the player
does not exist")."""

from __future__ import annotations

import httpx
import pytest
import redis

from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, redis_state
from tests.support import OPERATOR, OTHER_OPERATOR

pytestmark = pytest.mark.anyio


async def test_an_unrepresentable_amount_for_another_operators_player_is_op_34_as_for_nobody(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("yen", "JPY", 1000, "JP", "ja", "Taro", [], operator_id=OTHER_OPERATOR)
    before = redis_state(sync_redis)
    # OPERATOR accepts any currency; 1.50 does not fit JPY (no minor unit).
    foreign = await call(client, "changebalance", change("yen", 1, "WIN", "1.50", currency="JPY"))
    assert error_code(foreign) == "OP_34", foreign["data"]
    assert redis_state(sync_redis) == before  # another operator's player: nothing written at all
    # A player that does not exist: the same answer, recorded (its record and refusal entry).
    nobody = await call(client, "changebalance", change("nobody", 1, "WIN", "1.50", currency="JPY"))
    assert error_code(nobody) == "OP_34"
    assert any(":nobody|" in key for key in redis_state(sync_redis))
    # The owner still gets the malformed-amount answer for its own player.
    await wallet.create_player("yen2", "JPY", 1000, "JP", "ja", "Jiro", [], operator_id=OPERATOR)
    own = await call(client, "changebalance", change("yen2", 1, "WIN", "1.50", currency="JPY"))
    assert error_code(own) == "OP_50"
    assert "decimals" in own["data"]["error_message"]
