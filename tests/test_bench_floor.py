"""The bench's floor machinery (bench/floor.py, bench/fsyncprobe.py). No timing is
asserted: speed is measured by `make bench`; these check that the attribution and
the probe say what they claim."""

from __future__ import annotations

from pathlib import Path

from bench.floor import Event, Floor, episodes, explained
from bench.fsyncprobe import Probe, run

MS = 0.001


def floor(calls: list[tuple[float, float]], events: tuple[Event, ...] = ()) -> Floor:
    probe = Probe(1000.0, 100, 0.0, [s for s, _ in calls], [d for _, d in calls], [], 0.0)
    return Floor(probe, (0.0, 100.0), list(events), 0, 0)


def test_a_stall_explains_an_answer_it_overlapped_for_at_least_half_its_wait() -> None:
    stalls = floor([(10.0, 40 * MS)]).stalls(5 * MS)
    assert explained(10.0, 10.0 + 60 * MS, stalls)  # a 40 ms sync inside a 60 ms wait
    assert not explained(10.0, 10.0 + 100 * MS, stalls)  # 40 ms cannot explain 100 ms
    assert not explained(11.0, 11.0 + 60 * MS, stalls)  # a second later: no overlap


def test_a_redis_aof_event_counts_for_its_second_and_a_fork_is_not_the_disk() -> None:
    stalls = floor([], [Event("aof-fsync-always", 20.0, 45), Event("fork", 30.0, 80)]).stalls(5 * MS)
    assert explained(20.5, 20.5 + 70 * MS, stalls)  # stamped with the second it ended in
    assert not explained(30.2, 30.2 + 70 * MS, stalls)  # a fork overlapped: shown, not the disk


def test_stalls_in_a_row_add_up_but_two_views_of_one_stall_do_not() -> None:
    syncs = floor([(10.0, 30 * MS), (10.03, 30 * MS)]).stalls(5 * MS)
    assert explained(10.0, 10.0 + 100 * MS, syncs)  # 60 ms of syncs in a 100 ms wait
    assert not explained(10.0, 10.0 + 130 * MS, syncs)  # 60 ms cannot explain 130 ms
    one_each = floor([(20.5, 30 * MS)], (Event("aof-fsync-always", 20.0, 30),)).stalls(5 * MS)
    assert not explained(20.5, 20.5 + 100 * MS, one_each)  # the probe and Redis saw one 30 ms stall


def test_slow_answers_group_into_episodes_naming_what_they_met() -> None:
    found = episodes([(10.0, 10.06), (10.01, 10.07), (50.0, 50.2)], floor([(10.0, 40 * MS), (49.9, 1 * MS)]))
    assert [(e.answers, e.disk_caused) for e in found] == [(2, 2), (1, 0)]
    assert found[0].stalls == ["probe sync 40 ms"] and found[1].stalls == []
    assert round(found[1].worst_ms) == 200


def test_the_probe_syncs_every_due_record_and_removes_its_file(tmp_path: Path) -> None:
    probe = run(tmp_path / "probe.dat", 2000.0, 100, lambda syncs: syncs >= 20)
    assert len(probe.call_starts) == len(probe.call_seconds) == 20
    assert len(probe.record_latency_us) >= 20  # group commit: a sync carries every record due by then
    assert all(latency >= 0 for latency in probe.record_latency_us)
    assert all(seconds > 0 for seconds in probe.call_seconds)
    assert not (tmp_path / "probe.dat").exists()
