"""Per-process tallies of the callbacks: latency buckets, answers by code, in-flight.

The hot path counts here in plain Python lists (about a microsecond a callback);
app/metrics.py folds the counts into prometheus-client's metrics once a second
and before every scrape. prometheus-client's own multiprocess values take a
lock and write an mmap per increment: per callback (histogram, answer,
in-flight up and down) that measured ~18 us, over 10 % of an OIA callback's CPU,
where the issue allows 3 %.

Label values come only from the fixed tables given here: a command or an outcome
a request invents is counted as "unknown" / "other", so no request can add a series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import perf_counter

# Upper bounds (seconds) of the latency buckets: fine below the platforms' 50 ms
# budget (StarGame's whole round trip), up to 100 ms; slower answers land in +Inf.
LATENCY_BUCKETS_S = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1)
# The command label of a request whose command is none of its protocol's.
UNKNOWN_COMMAND = "unknown"
# The code label of an outcome missing from a protocol's table (a bug, never a request's text).
OTHER_CODE = "other"
# Refusal reasons: nothing booked because the budget was spent; a Redis reply lost or late.
DEADLINE = "deadline"
OUTCOME_UNKNOWN = "outcome_unknown"
REFUSAL_REASONS = (DEADLINE, OUTCOME_UNKNOWN)


class Row:
    """One command's counts: answers per latency bucket (the last is +Inf), their
    seconds in all, and answers per outcome (the meter's outcome order)."""

    __slots__ = ("answers", "buckets", "seconds")

    def __init__(self, outcomes: int) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.seconds = 0.0
        self.answers = [0] * outcomes

    def take(self) -> tuple[list[int], float, list[int]]:
        """The counts so far (buckets, seconds, answers); counting goes on from zero."""
        taken = self.buckets, self.seconds, self.answers
        self.buckets, self.seconds, self.answers = [0] * len(self.buckets), 0.0, [0] * len(self.answers)
        return taken


class CallbackMeter:
    """One protocol's tallies. outcomes: each outcome key a handler may report, to
    (code label, refusal reason or ''): several keys may share a code (OIA's OP_47 is
    a deadline refusal or an outcome unknown)."""

    def __init__(self, protocol: str, commands: Sequence[str], outcomes: Mapping[str, tuple[str, str]]) -> None:
        assert UNKNOWN_COMMAND not in commands
        self.protocol = protocol
        self.commands = (*commands, UNKNOWN_COMMAND)
        self.outcomes = {**outcomes, OTHER_CODE: (OTHER_CODE, "")}
        assert all(reason in ("", *REFUSAL_REASONS) for _, reason in self.outcomes.values())
        self.outcome_index = {key: i for i, key in enumerate(self.outcomes)}
        self.other = self.outcome_index[OTHER_CODE]
        self.rows = {command: Row(len(self.outcomes)) for command in self.commands}
        self.unknown = self.rows[UNKNOWN_COMMAND]
        self.in_flight = 0

    def record(self, command: str, outcome: str, elapsed_s: float) -> None:
        row = self.rows.get(command) or self.unknown
        row.buckets[bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1  # first bound >= elapsed: Prometheus's "le"
        row.seconds += elapsed_s
        row.answers[self.outcome_index.get(outcome, self.other)] += 1


Endpoint = Callable[..., Awaitable[object]]


def metered(meter: CallbackMeter, command: str, outcome: str, endpoint: Endpoint) -> Endpoint:
    """A Starlette endpoint counted as one command with one outcome (OIA's GET ping)."""

    async def counted(*args: object) -> object:
        started = perf_counter()
        meter.in_flight += 1
        try:
            answer = await endpoint(*args)
        finally:
            meter.in_flight -= 1
        meter.record(command, outcome, perf_counter() - started)
        return answer

    return counted
