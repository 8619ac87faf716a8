"""What can go wrong below a protocol, in the terms a protocol answers in.

The Redis client layer raises these; each protocol maps them to its own
answer (OIA: OP_50 / OP_47; StarGame: fail plus reconciliation). The
distinction that matters for money is whether a booking may have run.
"""

from __future__ import annotations


class WalletCallError(Exception):
    """Base of the errors a wallet call can end in."""


class WalletUnavailable(WalletCallError):
    """Redis could not be asked: nothing was sent, so nothing can have moved."""


class OutcomeUnknown(WalletCallError):
    """The call was sent but no reply came (time-out, lost connection): it may
    have run. Never re-sent; the protocol answers 'outcome unknown'."""
