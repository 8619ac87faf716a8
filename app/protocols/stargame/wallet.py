"""StarGame's wallet call: a writeBet booked by one script on the player's partition."""

from __future__ import annotations

import itertools
import os

import msgspec

from app.wallet import Account, Wallet


class RequestIds:
    """A writeBet's request id: 32 hex digits (the shape the reconciler checks), a
    random 64-bit prefix per process and a counter. Unique without drawing 16 random
    bytes and building a UUID per request (uuid4 was 6 % of a writeBet's CPU)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked worker draws its own prefix

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


REQUEST_IDS = RequestIds()


class Booking(msgspec.Struct):
    code: str  # OK, CURRENCY, SETTLED, FUNDS, BLOCKED, LATE, OVERFLOW, BACKLOG, NO_PLAYER
    account: Account | None


async def book(
    wallet: Wallet, player_id: str, bet_minor: int, win_minor: int, deadline_ms: int,
    currency_code: str = "", request_id: str | None = None, retention_s: int = 3600,
) -> Booking:
    """currency_code: the currency the amounts were converted for; the script
    refuses (CURRENCY) if the account's differs. '' books minor units as given.
    request_id (hex; a fresh one if None) is recorded with what the booking moved,
    for retention_s, so app/protocols/stargame/reconciler.py can settle it if the reply is lost;
    it is also the ref of the booking's ledger entries (one name for the request everywhere)."""
    request_id = request_id or REQUEST_IDS.new()
    keys, partition = wallet.booking_keys(player_id)
    keys.append(wallet.keys.stargame_request(partition, request_id))
    args = [player_id, partition, bet_minor, win_minor, deadline_ms, wallet.settings.backlog_max, request_id,
            currency_code, retention_s * 1000]
    reply = await wallet.scripts.stargame_book(keys=keys, args=args)
    if reply[0] == "NO_PLAYER":
        return Booking("NO_PLAYER", None)
    return Booking(reply[0], Account(player_id, int(reply[1]), reply[2], reply[3]))
