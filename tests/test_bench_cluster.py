"""The cluster bench's placement and the merge of several wrk runs' latencies
(bench/placement.py, bench/spread.py). No timing is asserted (speed is measured by
`make bench-cluster`); these check that the placement and the merged percentiles
say what the report claims."""

from __future__ import annotations

import os

import pytest

from bench.placement import plan
from bench.spread import merged_ms, quantiles_of

CORES = len(os.sched_getaffinity(0))


def uniform(low_us: int, high_us: int) -> list[tuple[float, int]]:
    """The quantiles load.lua prints for latencies spread evenly from low to high."""
    marks = [i * 0.5 for i in range(1, 199)] + [99 + i * 0.05 for i in range(1, 19)] + [
        99.9 + i * 0.01 for i in range(1, 10)] + [100.0]
    return [(p, round(low_us + (high_us - low_us) * p / 100)) for p in marks]


def test_one_run_merged_is_that_run() -> None:
    run = uniform(0, 10_000)
    assert merged_ms([(5000, run)], 0.5) == pytest.approx(5.0)
    assert merged_ms([(5000, run)], 0.99) == pytest.approx(9.9)
    assert merged_ms([(5000, run)], 0.999) == pytest.approx(9.99)


def test_runs_merge_by_their_request_counts_not_by_averaging_their_percentiles() -> None:
    fast, slow = uniform(1000, 2000), uniform(100_000, 200_000)
    # 99 % of the requests were fast: the merged p50 is fast, the p99.9 in the slow run.
    parts = [(9900, fast), (100, slow)]
    assert 1.0 <= merged_ms(parts, 0.5) <= 2.0
    assert merged_ms(parts, 0.99) <= 2.0
    assert merged_ms(parts, 0.999) >= 100.0
    # Equal counts: the median sits between the two runs (the slow one's lowest answer).
    assert merged_ms([(1000, fast), (1000, slow)], 0.5) <= 2.0
    assert merged_ms([(1000, fast), (1000, slow)], 0.51) >= 100.0


def test_wrk_quantiles_are_parsed_in_order() -> None:
    assert quantiles_of("x\nWRK_QUANTILES 0.5:10,99.9:900,100:1200\n") == [(0.5, 10), (99.9, 900), (100.0, 1200)]


def test_two_cores_place_as_bench_run_does() -> None:
    placed = plan(2, [5, 9])
    assert (placed.walletd_cores, placed.redis_cores, placed.load_cores) == ([5], [9], [9])
    assert [placed.walletd_cpus(i) for i in range(3)] == ["5"] * 3
    assert placed.redis_cpus(2) == {9} and placed.load_cpus() == "9"


def test_every_role_gets_cores_of_its_own_from_three_and_walletd_the_most() -> None:
    allowed = list(range(4, 68))  # a larger machine's cores, as its process may use them
    for cores in range(3, len(allowed) + 1):
        placed = plan(cores, allowed)
        roles = [placed.walletd_cores, placed.redis_cores, placed.load_cores]
        assert all(roles) and sorted(c for role in roles for c in role) == allowed[:cores], cores
        assert len(placed.redis_cores) <= 3 and len(placed.walletd_cores) >= len(placed.load_cores), cores
    assert plan(16, allowed).walletd_cores == list(range(11, 20))  # 4 load, 3 Redis, 9 walletd


def test_no_cores_pins_nothing_and_too_many_is_refused() -> None:
    assert plan(None).walletd_cpus(0) is None and plan(None).load_cpus() is None
    with pytest.raises(SystemExit, match="may use"):
        plan(CORES + 1)
