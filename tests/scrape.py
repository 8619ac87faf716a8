"""Reading GET /metrics in the tests: its samples by name and labels, parsed with
prometheus-client's own parser (as Prometheus reads the text format)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def named(scraped: Samples, name: str, **match: str) -> dict[Labels, float]:
    """The samples of one name whose labels include match, by their labels."""
    return {labels: value for (sample, labels), value in scraped.items()
            if sample == name and set(match.items()) <= set(labels)}


def nonzero(scraped: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of one name that are not 0, by the values of the labels keys."""
    return {tuple(dict(labels)[key] for key in keys): value
            for labels, value in named(scraped, name).items() if value}


def answers(scraped: Samples) -> dict[tuple[str, str, str], float]:
    """walletd_callback_answers_total that are not 0, by (protocol, command, code)."""
    return nonzero(scraped, "walletd_callback_answers_total", "protocol", "command", "code")  # type: ignore[return-value]


def counts(scraped: Samples) -> dict[tuple[str, str], float]:
    """The latency histogram's _count that are not 0, by (protocol, command)."""
    return nonzero(scraped, "walletd_callback_duration_seconds_count", "protocol", "command")  # type: ignore[return-value]


def answers_by_command(by_code: dict[tuple[str, str, str], float]) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for (protocol, command, _), value in by_code.items():
        totals[protocol, command] = totals.get((protocol, command), 0) + value
    return totals
