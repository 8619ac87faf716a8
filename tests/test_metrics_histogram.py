"""The latency histogram is filled through prometheus-client's private fields
(app/metrics.py add_observations: _buckets, _sum): what it exports must be exactly
what prometheus-client's own observe() of the same latencies exports, in memory and
in multiprocess mode, so a prometheus-client that changes those fields fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector

from app.callback_meter import LATENCY_BUCKETS_S, CallbackMeter
from app.metrics import CALLBACK_SECONDS, MULTIPROC_ENV, Definitions, MeterFold

# Each bound exactly (Prometheus's le is inclusive), between bounds, 0 and past the last.
LATENCIES_S = [0.0, *LATENCY_BUCKETS_S, *(bound * 0.9 for bound in LATENCY_BUCKETS_S), 0.2, 3.0, 0.05, 0.05]


def histogram(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() if family.name == CALLBACK_SECONDS for s in family.samples
            if s.labels.get("command") == "cmd" and not s.name.endswith("_created")}


def filled(folded: bool, registry: CollectorRegistry | None) -> None:
    defined = Definitions(registry)
    if folded:  # walletd's way: counted on the hot path, folded into prometheus-client
        meter = CallbackMeter("p", ["cmd"], {"OK": ("OK", "")})
        fold = MeterFold(meter, defined)
        for latency in LATENCIES_S:
            meter.record("cmd", "OK", latency)
        fold.fold()
    else:  # prometheus-client's own way
        child = defined.callback_seconds.labels("p", "cmd")
        for latency in LATENCIES_S:
            child.observe(latency)


def test_folded_latencies_export_as_observed_ones() -> None:
    exported = []
    for folded in (True, False):
        registry = CollectorRegistry()
        filled(folded, registry)
        exported.append(histogram(registry))
    assert exported[0] == exported[1]
    assert exported[0][(CALLBACK_SECONDS + "_count", (("command", "cmd"), ("protocol", "p")))] == len(LATENCIES_S)


def test_folded_latencies_export_as_observed_ones_across_processes(tmp_path: Path) -> None:
    exported = []
    in_memory = values.ValueClass
    try:
        for folded in (True, False):
            directory = tmp_path / str(folded)
            directory.mkdir()
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(MULTIPROC_ENV, str(directory))
                values.ValueClass = values.get_value_class()  # as `walletd serve` sets it (app/metrics.py)
                filled(folded, None)
                registry = CollectorRegistry()
                MultiProcessCollector(registry, str(directory))
                exported.append(histogram(registry))
    finally:
        values.ValueClass = in_memory
    assert exported[0] == exported[1]
    assert exported[0][(CALLBACK_SECONDS + "_count", (("command", "cmd"), ("protocol", "p")))] == len(LATENCIES_S)
