"""The keys and ids the agents' point wallets and transfers will use (docs/transfers.md):
each key lives in the hash slot of the account whose partition keeps it, so one script
per side stays possible on Redis Cluster; ids that could make two names collide, or
split two ways, are refused."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from app.ids import TRANSFER_ID, account_ref, transfer_id, transfer_source
from app.keys import Keys

PARTITIONS = 256  # the cluster default (spread over 3 primaries)


@pytest.fixture
def keys() -> Keys:
    return Keys(PARTITIONS)


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_an_agents_wallet_is_placed_like_a_player_of_the_same_id_but_under_its_own_name(keys: Keys) -> None:
    partition = keys.partition("a17")
    assert keys.agent("a17") == f"w:{{p{partition}}}:agent:a17"
    assert slot(keys.agent("a17")) == slot(keys.account("a17")) == slot(keys.seq(partition))
    assert keys.agent("a17") != keys.account("a17")  # an agent and a player may share an id


def test_agent_of_key_names_only_exact_agent_keys_of_the_right_partition(keys: Keys) -> None:
    assert keys.agent_of_key(keys.agent("a17")) == "a17"
    wrong_partition = f"w:{{p{(keys.partition('a17') + 1) % PARTITIONS}}}:agent:a17"
    for key in (keys.account("a17"), wrong_partition, f"{keys.agent('a17')}|x", "w:{p1}:agent:",
                keys.transfer(keys.partition("a17"), "agent:a17|r1")):
        assert keys.agent_of_key(key) is None, key
    assert keys.player_of_account(keys.agent("a17")) is None


def test_a_transfer_record_shares_its_source_accounts_slot_and_its_credit_the_destinations(keys: Keys) -> None:
    transfer = transfer_id("agent", "a17", "dep-0001")
    assert transfer == "agent:a17|dep-0001"
    source, destination = keys.partition("a17"), keys.partition("612")
    assert source != destination  # the case the design is for: two partitions
    assert slot(keys.transfer(source, transfer)) == slot(keys.agent("a17")) == slot(keys.transfers_open(source))
    assert slot(keys.transfer_credit(destination, transfer)) == slot(keys.account("612"))
    assert keys.transfer(source, transfer) == f"w:{{p{source}}}:xfer:agent:a17|dep-0001"
    assert keys.transfer_credit(destination, transfer) == f"w:{{p{destination}}}:xcred:agent:a17|dep-0001"


def test_a_transfer_record_in_another_partition_than_its_source_is_a_programmers_error(keys: Keys) -> None:
    with pytest.raises(AssertionError):
        keys.transfer(keys.partition("612"), "agent:a17|r1")


@pytest.mark.parametrize("bad", ["", "agent:a17", "agent:a17|", "agent:|r1", "bank:a17|r1", "agent:a17|r|1",
                                 "agent:a:17|r1", "agent:a17|r 1", "agent:a17|r}1", "agent:a{17|r1",
                                 f"agent:a17|{'r' * 65}", f"agent:{'a' * 65}|r1", "agent:a17|r1\n"])
def test_a_transfer_id_that_is_not_one_is_refused_everywhere(keys: Keys, bad: str) -> None:
    assert TRANSFER_ID.fullmatch(bad) is None and transfer_source(bad) is None
    with pytest.raises(AssertionError):
        keys.transfer_credit(0, bad)
    with pytest.raises(AssertionError):
        keys.transfer(0, bad)


@pytest.mark.parametrize(("kind", "account", "ref"), [("agent", "a17", ""), ("agent", "a17", "r|1"),
                                                      ("agent", "a17", "r:1"), ("bank", "a17", "r1"),
                                                      ("agent", "a:17", "r1"), ("player", "", "r1")])
def test_building_a_transfer_id_from_bad_parts_is_refused(kind: str, account: str, ref: str) -> None:
    with pytest.raises(ValueError, match=r"transfer ref|not an account"):
        transfer_id(kind, account, ref)


def test_a_transfer_id_splits_back_into_its_source_one_way_only() -> None:
    for kind, account, ref in (("player", "john.doe@example.com", "w-1"), ("agent", "a17", "a17"),
                               ("agent", "x" * 64, "y" * 64)):
        built = transfer_id(kind, account, ref)
        assert transfer_source(built) == (kind, account)
        assert TRANSFER_ID.fullmatch(built) is not None
    assert account_ref("player", "611") == "player:611"
