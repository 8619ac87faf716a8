"""What can go wrong below a protocol, in the terms a protocol answers in.

The Redis client layer raises these (app/scripts.py for script calls,
app/redis_pipe.py, app/redis_client.command_errors for redis-py's own
commands); each protocol maps them to its own answer (OIA: OP_50 / OP_47;
StarGame: fail plus reconciliation) and never sees redis-py's exceptions.
The distinction that matters for money is whether a booking may have run.
"""

from __future__ import annotations


class WalletCallError(Exception):
    """Base of the errors a wallet call can end in."""


class WalletUnavailable(WalletCallError):
    """Redis could not be asked: nothing was sent, so nothing can have moved."""


class OutcomeUnknown(WalletCallError):
    """The call was sent but no reply came (time-out, lost connection): it may
    have run. Never re-sent; the protocol answers 'outcome unknown'."""


class WalletRefused(WalletCallError):
    """Redis answered with an error: it refused the command, or the script ran and
    raised. Not a network fault; the text is Redis's."""


class ConnectionFailed(WalletCallError):
    """redis-py's connection failed during one of its own commands (not a script),
    and redis-py cannot say whether the command was written. A read moved nothing
    (the wallet was unavailable); a write's outcome is unknown."""
