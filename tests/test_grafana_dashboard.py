"""deploy/grafana/walletd.json: it parses, every metric it queries is one GET /metrics
exports, and every metric walletd exports has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.scrape import samples

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "walletd.json"
METRIC = re.compile(r"\bwalletd_[a-z0-9_]+")
# A histogram's or counter's samples, as the family Prometheus stores them under.
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return found


def family(sample: str) -> str:
    return next((sample.removesuffix(s) for s in SUFFIXES if sample.endswith(s)), sample)


def test_every_expression_is_balanced() -> None:
    assert len(expressions()) >= 10
    for expr in expressions():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


@pytest.mark.anyio
async def test_the_dashboard_queries_what_metrics_exports_and_shows_all_of_it(client: httpx.AsyncClient) -> None:
    exported = {name for name, _ in samples((await client.get("/metrics")).text)}
    queried = {name for expr in expressions() for name in METRIC.findall(expr)}
    assert queried <= exported, queried - exported
    walletd_families = {family(name) for name in exported if name.startswith("walletd_")}
    assert walletd_families == {family(name) for name in queried}
