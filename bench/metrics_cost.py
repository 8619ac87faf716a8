"""What the metrics cost (issue 12: at most 3 % of OIA saturation): OIA saturation with
`[metrics] enabled` false and true, one walletd each, in the same run, in the order off,
on, on, off (ABBA: a linear drift of this shared machine's load cancels out of the means).
While metrics are on, /metrics is scraped every SCRAPE_INTERVAL_S, as Prometheus would.

    python3 -m bench.metrics_cost --seconds 3   # this measurement alone, bench.run's options (make bench runs it)
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING

import msgspec

from app.callback_meter import CallbackMeter
from app.callbacks import Answered, Callback, Callbacks
from bench import loads
from bench.loads import Saturation

if TYPE_CHECKING:
    from bench.run import Bench

ORDER = (False, True, True, False)
# Prometheus's default is 15 s; a short interval, so the scrapes' own cost is in the figure.
SCRAPE_INTERVAL_S = 5.0
COST_MAX = 0.03  # the bound
FRONT_CALLS = 200_000  # callbacks through the front, per kind, for the in-process figure


class Scraper(threading.Thread):
    """GET /metrics every SCRAPE_INTERVAL_S until stopped; counts the scrapes that failed."""

    def __init__(self, port: int) -> None:
        super().__init__(name="metrics-scraper", daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stopping = threading.Event()
        self.scrapes = self.failures = 0

    def run(self) -> None:
        while not self.stopping.wait(SCRAPE_INTERVAL_S):
            self.scrapes += 1
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:  # noqa: S310 - our own http:// URL
                    answer.read()
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join()


class Run(msgspec.Struct):
    metrics: bool
    saturation: Saturation
    scrapes: int = 0

    @property
    def cpu_us_per_request(self) -> float:
        """walletd's CPU (all its processes) per answered request."""
        return self.saturation.server_cpu * 1e6 / max(1.0, self.saturation.rate)


class MetricsCost(msgspec.Struct):
    runs: list[Run]
    front_us: float = 0.0  # what counting adds to each callback on the front (front_cost_us)

    def rate(self, metrics: bool) -> float:
        return statistics.mean(r.saturation.rate for r in self.runs if r.metrics == metrics)

    def cpu_us(self, metrics: bool) -> float:
        return statistics.mean(r.cpu_us_per_request for r in self.runs if r.metrics == metrics)

    @property
    def cost(self) -> float:
        """The share of OIA saturation throughput the metrics take (negative: within noise, on was faster)."""
        return 1 - self.rate(True) / self.rate(False)


async def answer(scope: object, receive: object, send: object) -> Answered:
    return "changebalance", "OK"


def front_cost_us() -> float:
    """Microseconds the raw front (app/callbacks.py) spends counting a callback: the same
    trivial handler through a front that counts and one that does not, in this process,
    no I/O: the hot path's own cost, free of the load's noise."""
    def per_call_us(metered: bool) -> float:
        meter = CallbackMeter("oia", ["changebalance"], {"OK": ("OK", "")})
        front = Callbacks(answer, [Callback("/oia/", answer, frozenset({"POST"}), prefix=True, meter=meter)],  # type: ignore[arg-type]
                          metered=metered)
        scope = {"type": "http", "method": "POST", "path": "/oia/changebalance"}
        started = time.perf_counter()
        for _ in range(FRONT_CALLS):
            with contextlib.suppress(StopIteration):
                front(scope, None, None).send(None)  # type: ignore[arg-type]  # no await inside: done at once
        return (time.perf_counter() - started) * 1e6 / FRONT_CALLS

    return min(per_call_us(True) - per_call_us(False) for _ in range(3))


def measure(bench: Bench) -> MetricsCost:
    args = bench.args
    runs = []
    for metrics in ORDER:
        bench.start_walletd(metrics=metrics)
        scraper = Scraper(bench.walletd_port) if metrics else None
        if scraper:
            scraper.start()
        try:
            step = loads.wrk(bench.walletd_port, "oia", "walletd", bench.players_file, args.connections, args.seconds,
                             bench.redis, bench.walletd)
        finally:
            if scraper:
                scraper.stop()
        if scraper and scraper.failures:
            raise RuntimeError(f"{scraper.failures} of {scraper.scrapes} scrapes of /metrics failed under load")
        runs.append(Run(metrics, step, scraper.scrapes if scraper else 0))
    return MetricsCost(runs, front_cost_us())


def table(measured: MetricsCost) -> str:
    rows = ["| run | metrics | req/s | walletd CPU | walletd CPU per request | errors | scrapes |",
            "|---|---|---|---|---|---|---|"]
    for i, run in enumerate(measured.runs, 1):
        s = run.saturation
        rows.append(f"| {i} | {'on' if run.metrics else 'off'} | {s.rate:,.0f} | {s.server_cpu:.0%} | "
                    f"{run.cpu_us_per_request:.0f} us | {s.errors} | {run.scrapes} |")
    return "\n".join(rows)


def summary(measured: MetricsCost) -> str:
    on, off = measured.rate(True), measured.rate(False)
    verdict = "within" if measured.cost <= COST_MAX else "OVER"
    return (f"OIA saturation with metrics on / off: {on:,.0f} / {off:,.0f} req/s = {on / off:.3f}, a cost of "
            f"{measured.cost:.1%} ({verdict} the issue's {COST_MAX:.0%}); walletd CPU per request "
            f"{measured.cpu_us(True):.0f} / {measured.cpu_us(False):.0f} us. Measured in process, without the "
            f"load's noise, counting adds {measured.front_us:.2f} us to each callback on the front, "
            f"{measured.front_us / measured.cpu_us(False):.1%} of walletd's CPU per OIA request")


def main(argv: list[str] | None = None) -> int:
    from bench.run import parse_args, with_bench  # noqa: PLC0415 - run imports this module

    def work(bench: Bench) -> int:
        measured = measure(bench)
        print(table(measured))
        print(summary(measured))
        return 0

    return with_bench(parse_args(argv), work)  # bench.run's options (--seconds, --connections, the CPUs)


if __name__ == "__main__":
    sys.exit(main())
