"""StarGame writeBet request ids: the shape the reconciler accepts, unique in a
process, and a forked worker never repeats its parent's."""

from __future__ import annotations

import os

from app.protocols.stargame.reconciler import is_request_id
from app.protocols.stargame.wallet import REQUEST_IDS


def test_request_ids_are_32_hex_digits_and_unique() -> None:
    ids = [REQUEST_IDS.new() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(is_request_id(request_id) for request_id in ids)


def test_a_forked_child_draws_its_own_prefix() -> None:
    parent = REQUEST_IDS.new()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, REQUEST_IDS.new().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert is_request_id(child)
    assert child[:16] != parent[:16]
