"""The client address behind trusted proxies (app/proxies.py): the rule alone, no server."""

from __future__ import annotations

import pytest

from app.allowlist import AllowList
from app.proxies import HOPS_MAX, forwarded_client

PROXIES = AllowList(["10.0.0.1", "10.1.0.0/16", "fd00::/8"])
PEER = ("10.0.0.1", 5000)  # a trusted proxy


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        (PEER, [b"203.0.113.5"], ("203.0.113.5", 0)),
        # Read from the right: the client's own left-most entry is never reached.
        (PEER, [b"127.0.0.1, 203.0.113.5"], ("203.0.113.5", 0)),
        # Trusted proxies in the chain are skipped; several header lines are one list.
        (PEER, [b"198.51.100.1, 203.0.113.5", b"10.1.2.3"], ("203.0.113.5", 0)),
        (PEER, [b"2001:db8::7 ,fd00::2"], ("2001:db8::7", 0)),
        # Every entry a trusted proxy: the left-most.
        (PEER, [b"10.1.0.9, 10.1.0.8"], ("10.1.0.9", 0)),
        # No header from the proxy: nobody (fails closed; a proxy that drops it is misconfigured).
        (PEER, [], None),
        # Not a trusted proxy: its own address, whatever it writes.
        (("203.0.113.9", 7), [b"127.0.0.1"], ("203.0.113.9", 7)),
        (None, [b"127.0.0.1"], None),
        # Malformed on the walk: nobody, which no allow-list allows.
        (PEER, [b""], None),
        (PEER, [b"203.0.113.5,"], None),
        (PEER, [b"203.0.113.5:443"], None),
        (PEER, [b"unknown"], None),
        (PEER, [b"\xff\xfe"], None),
        # Malformed left of the client: never read, so no refusal.
        (PEER, [b"garbage, 203.0.113.5"], ("203.0.113.5", 0)),
    ],
)
def test_the_client_is_the_rightmost_address_that_is_no_trusted_proxy(
        peer: tuple[str, int] | None, header: list[bytes], client: tuple[str, int] | None) -> None:
    assert forwarded_client(peer, header, PROXIES) == client


def test_a_chain_of_more_than_hops_max_proxies_is_refused() -> None:
    def chain(proxies: int) -> list[bytes]:
        return [b", ".join([b"203.0.113.5", *[b"10.1.0.1"] * proxies])]

    assert forwarded_client(PEER, chain(HOPS_MAX), PROXIES) == ("203.0.113.5", 0)
    assert forwarded_client(PEER, chain(HOPS_MAX + 1), PROXIES) is None
