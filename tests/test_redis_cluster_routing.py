"""The cluster client's routing arithmetic without a cluster (tests/test_redis_cluster_pipe.py
runs it against real ones): a key's slot is Redis's (redis.crc.key_slot, the CRC16 of its
hash tag), node URLs keep the credentials and TLS options, and a node's refusal replies
are parsed into what the client follows."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from redis.crc import key_slot

from app.errors import WalletUnavailable
from app.keys import Keys
from app.redis_cluster_pipe import ClusterPipelinedRedis, node_url, slot_of
from app.redis_pipe import ClusterRefusal, RedisPipeError, error_of

# Keys made of the characters that matter to hash tags, and any others.
TAGGY = st.text(alphabet=st.sampled_from("{}:|ab\u00e9\u4e2d\U0001f600"), max_size=12) | st.text(max_size=30)


@given(TAGGY)
def test_a_keys_slot_is_redis_own(key: str) -> None:
    assert slot_of(key) == key_slot(key.encode())
    assert slot_of(key.encode()) == key_slot(key.encode())


@given(st.integers(0, 16383), TAGGY)
def test_a_hostile_transaction_id_stays_in_its_partitions_slot(partition: int, tx_id: str) -> None:
    keys = Keys(16384)
    assert slot_of(keys.tx(partition, "oia:op", "player", tx_id)) == slot_of(keys.account_at(partition, "player"))


def test_node_urls_keep_credentials_and_tls_options() -> None:
    assert node_url("rediss://u:p%40ss@seed:7000/0?ssl_ca_certs=/ca.pem", "10.0.0.2:7001") == \
        "rediss://u:p%40ss@10.0.0.2:7001/0?ssl_ca_certs=/ca.pem"
    assert node_url("redis://seed:7000", "::1:7002") == "redis://[::1]:7002"


@pytest.mark.parametrize(("url", "said"), [("redis://seed:7000/3", "db 0"), ("unix:///tmp/r.sock", "TCP")])
def test_what_a_cluster_url_cannot_name(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        ClusterPipelinedRedis(url, 1, 1)


@pytest.mark.parametrize(("reply", "kind", "slot", "address"), [
    ("MOVED 3999 127.0.0.1:6381", "MOVED", 3999, "127.0.0.1:6381"),
    ("ASK 12 10.0.0.9:7000", "ASK", 12, "10.0.0.9:7000"),
    ("MOVED 5 :7001", "MOVED", 5, ":7001"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "TRYAGAIN", -1, ""),
    ("CLUSTERDOWN Hash slot not served", "CLUSTERDOWN", -1, ""),
])
def test_refusal_replies_are_not_run_and_say_where_to_go(reply: str, kind: str, slot: int, address: str) -> None:
    error = error_of(RedisPipeError(reply))
    assert isinstance(error, ClusterRefusal) and isinstance(error, WalletUnavailable)  # nothing ran
    assert (error.kind, error.slot, error.address) == (kind, slot, address)
    assert "[redis] cluster = true" in str(error)  # what the standalone client's caller reads
