"""Metrics as Prometheus scrapes them, after a known mix of operations: the edge's /metrics and
the registry's, connector's and audit's own ports, read with prometheus_client's parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.up.main import free_port
from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import initialize, post
from tests.processes import ROOT, mcpgw_up, stdio_server, wait_until

SLEEP_SECONDS = 0.25


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str) -> list[Sample]:
    response = httpx2.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named `name` whose labels include `labels` (0 when there is none)."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, f"{len(found)} samples of {name} {labels}: {found}"
    return found[0].value if found else 0.0


@dataclass(frozen=True)
class Metered:
    edge: str
    registry: str
    connector: str
    audit: str


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    tmp: Path = tmp_path_factory.mktemp("metered")
    port = free_port()
    env = {"MCPGW_METRICS_LISTEN": f"127.0.0.1:{port}"}
    with mcpgw_up(tmp, [stdio_server("fixture", FIXTURE)], "mcpgw with metrics", env) as base:
        mcp = f"{base}/mcp"
        session = initialize(mcp)

        def send(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            answer = post(mcp, body, session)
            assert answer.status_code == 200
            return answer.json()  # type: ignore[no-any-return]

        for n in range(3):
            assert "result" in send(n, "tools/call", {"name": "fixture_echo", "arguments": {"text": "x"}})
        assert send(3, "tools/call", {"name": "fixture_fail", "arguments": {"reason": "no"}})["result"][
            "isError"
        ]
        for n, name in ((4, "nobody_x"), (5, "nobody_y")):
            assert send(n, "tools/call", {"name": name})["error"]["code"] == -32602
        assert "result" in send(6, "tools/list", {})
        sleep = {"name": "fixture_sleep", "arguments": {"seconds": SLEEP_SECONDS}}
        assert "result" in send(7, "tools/call", sleep)
        yield Metered(
            f"{base}/metrics",
            f"http://127.0.0.1:{port}/metrics",
            f"http://127.0.0.1:{port + 1}/metrics",
            f"http://127.0.0.1:{port + 2}/metrics",
        )


DURATION = "mcp_server_operation_duration_seconds"


def test_the_edge_counts_every_operation_by_method_tool_and_error(metered: Metered) -> None:
    samples = scrape(metered.edge)
    call = {"mcp_method_name": "tools/call", "gen_ai_operation_name": "execute_tool"}
    ok = value(samples, f"{DURATION}_count", **call, gen_ai_tool_name="fixture_echo")
    assert ok == 3
    # Successes carry no error type (Prometheus shows the family's absent labels as "").
    echoed = [s for s in samples if s.labels.get("gen_ai_tool_name") == "fixture_echo"]
    assert echoed and {s.labels.get("error_type", "") for s in echoed} == {""}
    assert (
        value(samples, f"{DURATION}_count", **call, gen_ai_tool_name="fixture_fail", error_type="tool_error")
        == 1
    )
    # A name the catalog does not know is no label value of its own (bounded label sets).
    assert value(samples, f"{DURATION}_count", **call, gen_ai_tool_name="_OTHER", error_type="-32602") == 2
    assert not [s for s in samples if "nobody" in str(s.labels)]
    assert value(samples, f"{DURATION}_count", mcp_method_name="tools/list") == 1
    labels = {
        "mcp_protocol_version": "2025-11-25",
        "network_transport": "tcp",
        "network_protocol_name": "http",
    }
    assert value(samples, f"{DURATION}_count", **call, **labels, gen_ai_tool_name="fixture_sleep") == 1


def test_durations_fall_in_the_conventions_buckets(metered: Metered) -> None:
    samples = scrape(metered.edge)
    slept = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "fixture_sleep"}
    counts = {
        float(s.labels["le"]): s.value
        for s in samples
        if s.name == f"{DURATION}_bucket" and slept.items() <= s.labels.items()
    }
    assert (counts[0.2], counts[5], counts[float("inf")]) == (0, 1, 1)
    assert value(samples, f"{DURATION}_sum", **slept) >= SLEEP_SECONDS
    assert sorted(counts) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf")]


def test_calls_are_counted_by_server_tool_key_and_outcome(metered: Metered) -> None:
    samples = scrape(metered.edge)
    calls = "mcpgw_calls_total"
    assert value(samples, calls, mcpgw_server="fixture", mcpgw_tool="echo", mcpgw_outcome="ok") == 3
    assert value(samples, calls, mcpgw_server="fixture", mcpgw_tool="fail", mcpgw_outcome="tool_error") == 1
    assert value(samples, calls, mcpgw_server="_OTHER", mcpgw_tool="_OTHER", mcpgw_outcome="error") == 2
    assert value(samples, "mcpgw_calls_in_flight") == 0
    assert value(samples, "mcpgw_sessions_started_total") == 1
    assert value(samples, "mcpgw_streams_open") == 0


def test_the_connector_times_each_downstream_request_and_reports_its_servers(metered: Metered) -> None:
    samples = scrape(metered.connector)
    duration = "mcp_client_operation_duration_seconds_count"
    echo = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "echo", "mcpgw_server": "fixture"}
    assert value(samples, duration, **echo, network_transport="pipe") == 3
    assert value(samples, duration, gen_ai_tool_name="fail", error_type="tool_error") == 1
    # Refused at the edge: never sent downstream.
    assert sum(s.value for s in samples if s.name == duration) == 5
    assert value(samples, "mcpgw_downstream_connected", mcpgw_server="fixture") == 1
    assert value(samples, "mcpgw_downstream_connections_total", mcpgw_server="fixture") == 1


def test_audit_and_registry_report_their_progress(metered: Metered) -> None:
    # Every operation above is a record: 7 tool calls and a tools/list.
    wait_until(lambda: value(scrape(metered.audit), "mcpgw_audit_exported_total") >= 8, 20, "audit to export")
    samples = scrape(metered.audit)
    assert value(samples, "mcpgw_audit_exported_total") == 8
    assert value(samples, "mcpgw_audit_export_lag_seconds_count") == 8
    assert value(samples, "mcpgw_audit_pending") == 0
    assert value(scrape(metered.registry), "mcpgw_registry_revision") >= 1


def test_every_metric_the_dashboard_queries_is_served(metered: Metered) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "mcpgw.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:mcp|mcpgw)_[a-z_]+\b", target["expr"])
    }
    samples = [
        s for url in (metered.edge, metered.registry, metered.connector, metered.audit) for s in scrape(url)
    ]
    # Label names match the pattern too; what is left must be series served.
    metrics = queried - {label for s in samples for label in s.labels}
    assert metrics and metrics <= {s.name for s in samples}, sorted(metrics - {s.name for s in samples})
