"""Which cores each process of the cluster bench runs on (`--cores N`).

The first N cores this runner may use are split into three roles: walletd (its
HTTP process and its flush process share a core, as in `bench.run`), Redis (the
standalone server and the cluster's nodes) and the load (wrk and this runner's
open-loop client). On 2 cores that is `bench.run`'s placement: walletd on the
first, Redis and the load on the second. On more cores the load and Redis get a
quarter each (Redis at most one core per primary: a node's commands run on one
thread) and walletd the rest, one instance per core, so the same command shows
how the cluster scales where there are cores to scale onto. Without --cores
nothing is pinned and the kernel places everything.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

# Redis Cluster nodes run commands on one thread: more cores than primaries do not help them.
REDIS_CORES_MAX = 3
# Below this many cores Redis and the load generator share one.
SEPARATE_ROLES_MIN = 3


class Placement(msgspec.Struct):
    walletd_cores: list[int]  # instance i runs on walletd_cores[i % len(walletd_cores)]
    redis_cores: list[int]  # node i runs on redis_cores[i % len(redis_cores)]
    load_cores: list[int]  # wrk and the runner: all of them
    pinned: bool

    def walletd_cpus(self, instance: int) -> str | None:
        return str(self.walletd_cores[instance % len(self.walletd_cores)]) if self.pinned else None

    def redis_cpus(self, node: int) -> set[int] | None:
        return {self.redis_cores[node % len(self.redis_cores)]} if self.pinned else None

    def load_cpus(self) -> str | None:
        return ",".join(map(str, self.load_cores)) if self.pinned else None

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (no --cores): the kernel placed every process"
        walletd, redis, load = (", ".join(map(str, cores)) for cores in (self.walletd_cores, self.redis_cores,
                                                                          self.load_cores))
        return (f"walletd instances on CPU {walletd} (instance i on the i-th, round robin); Redis nodes on CPU "
                f"{redis} (node i on the i-th, round robin); wrk and the runner on CPU {load}")


def plan(cores: int | None, allowed: list[int] | None = None) -> Placement:
    """The roles' cores among the first `cores` of allowed (default: those this process
    may use; see the module docstring)."""
    allowed = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    if cores is None:
        return Placement(allowed, allowed, allowed, pinned=False)
    if not 1 <= cores <= len(allowed):
        raise SystemExit(f"bench: --cores {cores}: this process may use {len(allowed)} cores ({allowed})")
    cpus = allowed[:cores]
    if cores == 1:
        return Placement(cpus, cpus, cpus, pinned=True)
    if cores < SEPARATE_ROLES_MIN:
        return Placement(cpus[:1], cpus[1:], cpus[1:], pinned=True)
    load = max(1, cores // 4)
    redis = min(REDIS_CORES_MAX, max(1, cores // 4))
    return Placement(cpus[load + redis:], cpus[load:load + redis], cpus[:load], pinned=True)


def pin(pid: int, cpus: set[int] | None) -> None:
    """Moves a running process onto cpus: every thread of it (affinity is per thread, and
    redis-server starts its background threads before it can be pinned)."""
    if cpus is None:
        return
    tasks: list[int] = []
    with contextlib.suppress(FileNotFoundError):  # it died: its own start reports why
        tasks = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended, or the process died
            os.sched_setaffinity(task, cpus)


def cpus_of(pid: int) -> str:
    """Where a process may run now, as the report shows it."""
    try:
        return ",".join(map(str, sorted(os.sched_getaffinity(pid))))
    except ProcessLookupError:
        return "?"
