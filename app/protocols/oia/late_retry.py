"""The late-retry guard's Python half (README "Late retries"): which ids may have been
decided before (booked, refused and recorded, or tombstoned by a cancel) although their
transaction record has expired.

Two answers, both cheap and both computed before the one booking script runs:
- the id's word and bit mask in the (blocked) Bloom filter, from (operator, player,
  transaction id); the script checks them in the current and previous generation;
- whether the request's transaction_timestamp is inside the filter's horizon; a
  request beyond it (or without a usable timestamp) is looked up in the ledger store.
"""

from __future__ import annotations

import hashlib
import math
import re
import time

# A blocked Bloom filter: each id sets FILTER_HASHES bits inside one 32-bit word of the
# bitmap, so the script reads or writes one word (one BITFIELD operation) per generation
# instead of scattered bits; at 10 bits per id that is about 2 % false positives (a
# standard filter: ~1 %), and a false positive only costs one ledger store lookup.
FILTER_HASHES = 4
WORD_BITS = 32
# A platform's clock may run this far ahead of ours (NTP keeps real clocks well inside).
CLOCK_SKEW_S = 300
# The OIA transaction_timestamp: UTC "Y-m-d H:i:s"; such strings sort as the times do.
STAMP = re.compile(r"\d{4}-[01]\d-[0-3]\d [0-2]\d:[0-5]\d:[0-5]\d")
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
# Redis bitmaps hold at most 2^32 bits.
FILTER_BITS_MAX = 2**32


def word_and_mask(operator_id: str, player_id: str, transaction_id: int, bits: int) -> tuple[int, int]:
    """The id's word in a filter of `bits` bits (its index in 32-bit words) and the
    FILTER_HASHES bits it sets there (a mask; colliding positions set fewer)."""
    assert 0 < bits <= FILTER_BITS_MAX
    key = f"{operator_id}|{player_id}|{transaction_id}".encode()
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    mask = 0
    for i in range(FILTER_HASHES):
        mask |= 1 << ((h >> (32 + 5 * i)) & (WORD_BITS - 1))
    return (h & 0xFFFFFFFF) % max(1, bits // WORD_BITS), mask


def offsets(operator_id: str, player_id: str, transaction_id: int, bits: int) -> list[int]:
    """The bitmap offsets the id sets (Redis numbers a word's bits from its most significant)."""
    word, mask = word_and_mask(operator_id, player_id, transaction_id, bits)
    return sorted(word * WORD_BITS + WORD_BITS - 1 - p for p in range(WORD_BITS) if mask >> p & 1)


class Horizon:
    """Generations of the filter and the transaction_timestamp cut-off.

    A booking made at our time b is in generation b // generation_s and is checked
    while that generation is the current or the previous one: for at least
    generation_s. A retry whose transaction_timestamp (the original's, creation
    time, so b >= it - CLOCK_SKEW_S) is at or after the cut-off was therefore
    booked inside the filter's window, and after `since_s` (bookings before it,
    by a walletd without the filter, left no bits)."""

    def __init__(self, generation_s: int) -> None:
        assert generation_s > 2 * CLOCK_SKEW_S
        self.generation_s = generation_s
        self.since_s = math.inf  # until start() has read it: every timestamp is old
        self.second = -1
        self.bounds = ("", "")

    def start(self, since_s: int) -> None:
        self.since_s = since_s
        self.second = -1  # bounds computed before are stale

    def generation(self, now_s: float) -> int:
        return int(now_s // self.generation_s)

    def expire_at_ms(self, generation: int) -> int:
        """A generation's filter is read until the end of the next one."""
        return ((generation + 2) * self.generation_s + CLOCK_SKEW_S) * 1000

    def young(self, stamp: str | None, now_s: float) -> bool:
        """True if the filter alone can tell whether this id was booked before."""
        if stamp is None or not STAMP.fullmatch(stamp):
            return False
        second = int(now_s)
        if second != self.second:
            self.bounds = self._bounds(second)
            self.second = second
        low, high = self.bounds
        return low <= stamp <= high

    def _bounds(self, second: int) -> tuple[str, str]:
        if self.since_s == math.inf:
            return ("~", "")  # nothing is young
        low = max(self.since_s, second - self.generation_s) + CLOCK_SKEW_S
        # A creation time in the future is not believed either.
        high = second + CLOCK_SKEW_S
        return (time.strftime(STAMP_FORMAT, time.gmtime(low)), time.strftime(STAMP_FORMAT, time.gmtime(high)))
