"""Every Redis key name walletd uses is built here, and only here.

All keys of one player share the hash tag of the player's partition, so one
Lua script can touch them all, unchanged on Redis Cluster. An agent's point wallet is
placed the same way (crc32 of its id); a transfer's keys are tagged with the partition
of the side that keeps them (docs/transfers.md): its record and the open-transfers index
with the source account's, its credit record (or tombstone) with the destination's.
"""

from __future__ import annotations

import re
import zlib

from app.ids import AGENT_ID, PLAYER_ID, TRANSFER_ID, transfer_source

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
# An agent's account key exactly: "w:{p<partition>}:agent:<agent id>" (as ACCOUNT_KEY).
AGENT_KEY = re.compile(
    rf"{re.escape(PREFIX)}:\{{p(0|[1-9][0-9]{{0,{PARTITION_DIGITS_MAX - 1}}})\}}:agent:({AGENT_ID.pattern})"
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

    def agent(self, agent_id: str) -> str:
        """An agent's point wallet (a hash like a player's account: bal, cur)."""
        return self.agent_at(self.partition(agent_id), agent_id)

    def agent_at(self, partition: int, agent_id: str) -> str:
        assert AGENT_ID.fullmatch(agent_id), agent_id
        return f"{self.tag(partition)}:agent:{agent_id}"

    def transfer(self, partition: int, transfer_id: str) -> str:
        """A transfer's record in its source account's partition (state, from, to, amount,
        created): written with the debit, settled by the same partition's scripts."""
        source = transfer_source(transfer_id)
        assert source is not None, transfer_id
        assert partition == self.partition(source[1]), (partition, transfer_id)
        return f"{self.tag(partition)}:xfer:{transfer_id}"

    def transfer_credit(self, partition: int, transfer_id: str) -> str:
        """The destination's side of a transfer, in the destination account's partition:
        its credit record, or the tombstone that makes the credit impossible."""
        assert TRANSFER_ID.fullmatch(transfer_id), transfer_id
        return f"{self.tag(partition)}:xcred:{transfer_id}"

    def transfers_open(self, partition: int) -> str:
        """Sorted set of the partition's debited, unsettled transfer ids (score: created
        ms): what a recovery pass reads instead of scanning."""
        return f"{self.tag(partition)}:xopen"

    @staticmethod
    def all_agents_pattern() -> str:
        """A SCAN glob: it may match keys that are not agents' accounts (see agent_of_key)."""
        return f"{PREFIX}:{{p*}}:agent:*"

    def agent_of_key(self, key: str) -> str | None:
        """The agent whose account this key is, or None (as player_of_account)."""
        match = AGENT_KEY.fullmatch(key)
        if match is None or int(match[1]) != self.partition(match[2]):
            return None
        return match[2]

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

    @staticmethod
    def consumer_lease(consumer: str) -> str:
        """Which instance's flusher reads under this consumer name (app/ledger/consumers.py)."""
        return f"{PREFIX}:consumer:{consumer}"


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
