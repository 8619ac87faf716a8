"""Limits that must agree across modules, checked where an import-time assert cannot
look: the Lua side of the amount limit, and the extremes of each limit end to end."""

from __future__ import annotations

import zlib

import msgspec
import redis

from app.ids import PLAYER_ID_MAX_LEN, is_player_id
from app.keys import PARTITIONS_MAX, Keys
from app.money import AMOUNT_MINOR_LIMIT
from app.protocols.oia.messages import TOKEN_MAX_LEN, TOKEN_MIN_LEN, TokenText
from app.scripts import LEDGER, read
from app.sessions import new_token, token_partition

# The ledger prelude alone, asked for its limit and whether its argument check
# admits the largest amount and refuses the next one.
PROBE = """
return {AMOUNT_LIMIT, pcall(integer_arg, ARGV[1], 'below') and 1 or 0, pcall(integer_arg, ARGV[2], 'at') and 1 or 0}
"""


def test_lua_amount_limit_is_pythons(sync_redis: redis.Redis) -> None:
    reply = sync_redis.eval(read(LEDGER) + PROBE, 0, AMOUNT_MINOR_LIMIT - 1, AMOUNT_MINOR_LIMIT)
    assert reply == [AMOUNT_MINOR_LIMIT, 1, 0]


def test_longest_player_id_in_the_last_partition_round_trips_its_account_key() -> None:
    # A longest id that lands in the highest partition: the key pattern must take both.
    player_id = next(candidate for n in range(10 * PARTITIONS_MAX)
                     if zlib.crc32((candidate := f"{n:0{PLAYER_ID_MAX_LEN}d}").encode()) % PARTITIONS_MAX
                     == PARTITIONS_MAX - 1)
    assert is_player_id(player_id) and len(player_id) == PLAYER_ID_MAX_LEN
    keys = Keys(PARTITIONS_MAX)
    assert keys.partition(player_id) == PARTITIONS_MAX - 1
    assert keys.player_of_account(keys.account(player_id)) == player_id


def test_a_token_of_the_last_partition_is_one_the_protocol_allows() -> None:
    token = new_token(PARTITIONS_MAX - 1)
    assert token_partition(token, PARTITIONS_MAX) == PARTITIONS_MAX - 1
    assert TOKEN_MIN_LEN <= len(token) <= TOKEN_MAX_LEN and token.isascii() and token.isalnum()
    assert msgspec.json.decode(msgspec.json.encode(token), type=TokenText) == token
