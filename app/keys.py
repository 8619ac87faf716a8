"""Every Redis key name walletd uses is built here, and only here.

All keys of one player share the hash tag of the player's partition, so one
Lua script can touch them all, unchanged on Redis Cluster.
"""

from __future__ import annotations

import re
import zlib

from app.ids import PLAYER_ID

# Every key starts with it, so walletd's keys can share a Redis with others' and be found by SCAN.
PREFIX = "w"
# As many partitions as Redis Cluster has hash slots: more could not spread further.
PARTITIONS_MAX = 16384
# Decimal digits of the largest partition number (16383: 5).
PARTITION_DIGITS_MAX = len(str(PARTITIONS_MAX - 1))
# An account key exactly: "w:{p<partition>}:acct:<player id>". Transaction and round
# keys of a hostile id (say 'x}:acct:y') match the SCAN glob too; this never does.
ACCOUNT_KEY = re.compile(
    rf"{re.escape(PREFIX)}:\{{p(0|[1-9][0-9]{{0,{PARTITION_DIGITS_MAX - 1}}})\}}:acct:({PLAYER_ID.pattern})"
)

# A StarGame request id: lower-case hex (checked per writeBet: a regex, not a generator).
REQUEST_ID = re.compile(r"[0-9a-f]+")


def partition_of(player_id: str, partitions: int) -> int:
    assert partitions > 0
    return zlib.crc32(player_id.encode()) % partitions


class Keys:
    def __init__(self, partitions: int) -> None:
        assert partitions > 0
        self.partitions = partitions

    def partition(self, player_id: str) -> int:
        return partition_of(player_id, self.partitions)

    @staticmethod
    def tag(partition: int) -> str:
        return f"{PREFIX}:{{p{partition}}}"

    def account(self, player_id: str) -> str:
        return self.account_at(self.partition(player_id), player_id)

    def account_at(self, partition: int, player_id: str) -> str:
        """The account key when the partition is already known (saves a crc32)."""
        return f"{self.tag(partition)}:acct:{player_id}"

    def seq(self, partition: int) -> str:
        """Counter of ledger entries ever written in the partition (gap detection)."""
        return f"{self.tag(partition)}:seq"

    def ledger(self, partition: int) -> str:
        return f"{self.tag(partition)}:ledger"

    def tx(self, partition: int, source: str, player_id: str, tx_id: str) -> str:
        """A transaction record, scoped by source (e.g. 'oia:<operator>') and player.
        Player ids never contain '|', so the name is unambiguous."""
        return f"{self.tag(partition)}:tx:{source}:{player_id}|{tx_id}"

    def round(self, partition: int, source: str, player_id: str, round_id: str) -> str:
        return f"{self.tag(partition)}:round:{source}:{player_id}|{round_id}"

    def seen(self, partition: int, generation: int) -> str:
        """The partition's late-retry Bloom filter (a bitmap) for one generation."""
        return f"{self.tag(partition)}:seen:{generation}"

    def stargame_request(self, partition: int, request_id: str) -> str:
        """What one StarGame writeBet booked, or its tombstone (app/protocols/stargame/reconciler.py)."""
        assert REQUEST_ID.fullmatch(request_id), request_id
        return f"{self.tag(partition)}:sgreq:{request_id}"

    def session(self, partition: int, token: str) -> str:
        """A game session; token '' names a key that never exists (no usable token)."""
        return f"{self.tag(partition)}:sess:{token}"

    @staticmethod
    def all_accounts_pattern() -> str:
        """A SCAN glob: it also matches keys that are not accounts (see player_of_account)."""
        return f"{PREFIX}:{{p*}}:acct:*"

    def player_of_account(self, key: str) -> str | None:
        """The player whose account this key is, or None when it is not exactly an
        account key (any other key, a foreign id, or the wrong partition for the id)."""
        match = ACCOUNT_KEY.fullmatch(key)
        if match is None or int(match[1]) != self.partition(match[2]):
            return None
        return match[2]

    @staticmethod
    def alias(kind: str, external_id: str) -> str:
        """Alias keys are looked up alone (before the partition is known)."""
        return f"{PREFIX}:alias:{kind}:{external_id}"

    @staticmethod
    def meta() -> str:
        return f"{PREFIX}:meta"


# Fields of the meta hash: since when (unix s) every OIA booking is in the late-retry
# filter, and the filter layout ("<generation_s>:<bits>") those bits were set with.
META_FILTER_SINCE = "oia_filter_since"
META_FILTER_LAYOUT = "oia_filter_layout"
# Set by `walletd rebuild` while it writes (deleted when it is done): Redis is incomplete,
# so the cold-start guard (app/ledger/guard.py) counts it as behind the ledger store and
# walletd refuses callbacks.
META_REBUILD_RUNNING = "rebuild_running"
# The partition count the data in Redis was written with (app/wallet.py check_partitions).
META_PARTITIONS = "partitions"
