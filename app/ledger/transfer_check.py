"""walletd verify's transfer check: every transfer's legs pair up in the ledger store.

A transfer between two accounts is booked in two partitions (docs/transfers.md): its
debit (transfer_out) where its source account lives, then either its credit
(transfer_in) where its destination lives or its reversal (transfer_reverse) back at
the source. The store holds every leg after verify's drain, so a transfer is exactly
one of:
  settled    one debit and one credit or reversal of the same amount (the legs sum to 0);
  in flight  its debit alone: the points are on their way, accounted as the debit's
             amount (balances + amounts in flight stay constant), not a problem;
  wrong      anything else (a credit without a debit makes money, a short credit
             loses it, two settlements double it): each is a problem.
Players' balances are checked against their entries by verify as before (transfer legs
are money kinds, so a player's legs are in its sum).
"""

from __future__ import annotations

from app.ledger import UNSETTLED_MAX, LedgerStore, TransferLegs


def transfer_problems(store: LedgerStore, limit: int = UNSETTLED_MAX) -> list[str]:
    """A problem for each transfer whose legs are wrong; the ones in flight are fine."""
    assert limit > 0
    unsettled = store.unsettled_transfers(limit)
    problems = [describe(legs) for legs in unsettled if not legs.in_flight()]
    if len(unsettled) >= limit:
        problems.append(f"transfers: {limit} or more are unsettled (in flight or wrong); only the first {limit} "
                        f"were checked")
    return problems


def describe(legs: TransferLegs) -> str:
    """What is wrong with one transfer's legs, in words."""
    counts = f"{legs.outs} debit(s), {legs.ins} credit(s), {legs.reverses} reversal(s)"
    if legs.outs == 0:
        reason = "credited or reversed without a debit"
    elif legs.outs > 1 or legs.ins + legs.reverses > 1:
        reason = "debited or settled more than once"
    elif legs.out_minor >= 0:
        reason = "its debit is not negative"
    else:
        reason = f"its legs sum to {legs.net_minor}, not 0"
    return f"transfer {legs.transfer_id}: {reason} ({counts})"
