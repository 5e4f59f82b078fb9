"""Trace context across SDKs: the TypeScript SDK's client sends a traceparent, a TypeScript SDK
server receives the connector's, and the spans between them arrive over real OTLP as one tree."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.up.main import free_port
from tests.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.processes import NODE, NODE_DIR, port_open, running, service_tree, wait_until

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # OTLP span kinds
DEADLINE = 60

pytestmark = pytest.mark.skipif(not NODE.exists(), reason="node is not installed: run `make install`")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OtlpReceiver]]:
    tmp: Path = tmp_path_factory.mktemp("ts-traced")
    port = free_port()
    servers = [
        {
            "name": "ts",
            "connection_type": "http",
            "connection_string": f"http://127.0.0.1:{port}/mcp",
            "tools_to_execute": ["*"],
        }
    ]
    ts_server = [str(NODE), str(NODE_DIR / "trace-server.mjs"), "--port", str(port)]
    with otlp_receiver() as (endpoint, receiver), running(ts_server) as server:
        wait_until(lambda: port_open(port), 15, "the TypeScript trace server", server)
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with service_tree(tmp, servers, env=env) as (base,):
            yield f"{base}/mcp", receiver


def traced_call(url: str, tool: str, traceparent: str) -> dict[str, str | None]:
    """What the downstream saw of one call the TypeScript client made with `traceparent`."""
    completed = subprocess.run(
        [str(NODE), "traced-call.mjs", url, tool, traceparent],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def spans_of(receiver: OtlpReceiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    def of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.trace_id == trace_id]

    return of(receiver.wait_for(lambda spans: len(of(spans)) >= count))


def test_a_typescript_clients_trace_reaches_a_typescript_server_through_the_gateway(
    gateway: tuple[str, OtlpReceiver],
) -> None:
    url, receiver = gateway
    seen = traced_call(url, "ts_trace_context", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")

    spans = spans_of(receiver, CLIENT_TRACE, 2)
    (edge,) = [s for s in spans if s.kind == SERVER]
    (connector,) = [s for s in spans if s.kind == CLIENT]
    assert edge.parent_span_id == CLIENT_SPAN and edge.name == "tools/call ts_trace_context"
    assert connector.parent_span_id == edge.span_id and connector.name == "tools/call trace_context"
    # The TypeScript SDK hands its handler the connector's span, in _meta and in the header.
    continued = f"00-{CLIENT_TRACE}-{connector.span_id}-01"
    assert seen == {"meta_traceparent": continued, "meta_tracestate": None, "header_traceparent": continued}


def test_an_unsampled_typescript_client_trace_stays_unsampled_to_the_server(
    gateway: tuple[str, OtlpReceiver],
) -> None:
    url, receiver = gateway
    trace_id = "1" * 32
    seen = traced_call(url, "ts_trace_context", f"00-{trace_id}-{CLIENT_SPAN}-00")

    # The edge's record is the audit, exported whatever the flag; the connector makes no span.
    (edge,) = spans_of(receiver, trace_id, 1)
    assert edge.kind == SERVER and edge.parent_span_id == CLIENT_SPAN
    assert seen["meta_traceparent"] == seen["header_traceparent"] == f"00-{trace_id}-{edge.span_id}-00"
    # A later sampled call's connector span arrives after any this one could have sent.
    traced_call(url, "ts_trace_context", f"00-{'2' * 32}-{CLIENT_SPAN}-01")
    spans_of(receiver, "2" * 32, 2)
    assert [s.kind for s in receiver.wait_for(lambda _: True) if s.trace_id == trace_id] == [SERVER]
