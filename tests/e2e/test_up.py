"""`mcpgw up` on the demo config, as `make run` starts it, driven by the official MCP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from services.up.main import free_port
from tests.processes import ROOT, http_ok, stop, wait_until

DEMO = ROOT / "examples" / "demo" / "config.json"


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    state: Path


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    clock_port, edge_port = free_port(), free_port()
    config = json.loads(DEMO.read_text())
    clock = next(c for c in config["mcp"]["client_configs"] if c["name"] == "clock")
    clock["connection_string"] = f"http://127.0.0.1:{clock_port}/mcp"
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    argv = [
        sys.executable, "-m", "services.cli", "up",
        "--config", str(tmp_path / "config.json"),
        "--state-dir", str(tmp_path / "state"),
        "--port", str(edge_port),
        "--sidecar", f"python examples/servers/clock_http.py --port {clock_port}",
    ]  # fmt: skip
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{edge_port}/readyz"), 60, "mcpgw up", process)
        yield Gateway(f"http://127.0.0.1:{edge_port}/mcp", process, tmp_path / "state")
    finally:
        for child in _descendants(process.pid):
            child.kill()
        stop(process, signal.SIGKILL)
        log.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


async def _use_demo(url: str) -> tuple[set[str], str, str]:
    with anyio.fail_after(60):
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "mcpgw"
            names: set[str] = set()
            # Both servers connect in the background; their tools arrive with the catalog.
            while not {"text_reverse", "clock_add"} <= names:
                names = {tool.name for tool in (await session.list_tools()).tools}
                await anyio.sleep(0.1)
            reversed_text = await session.call_tool("text_reverse", {"text": "gateway"})
            added = await session.call_tool("clock_add", {"a": 2, "b": 40})
            assert not reversed_text.is_error and not added.is_error
            return names, reversed_text.content[0].text, added.content[0].text  # type: ignore[union-attr]


def test_the_demo_gateway_lists_calls_and_audits_both_servers(gateway: Gateway) -> None:
    names, reversed_text, added = anyio.run(_use_demo, gateway.url)
    assert {"text_word_count", "text_reverse", "text_slugify", "clock_add", "clock_utc_now"} <= names
    assert reversed_text == "yawetag"
    assert float(added) == 42.0

    spans = gateway.state / "audit" / "spans.jsonl"

    def audited() -> set[str]:
        if not spans.exists():
            return set()
        records = [json.loads(line) for line in spans.read_text().splitlines()]
        # Every operation is audited (tools/list too); the calls carry their tool's name.
        calls = [r["attributes"] for r in records if r["attributes"]["mcp.method.name"] == "tools/call"]
        return {a["gen_ai.tool.name"] for a in calls if a["mcpgw.outcome"] == "ok"}

    wait_until(lambda: {"text_reverse", "clock_add"} <= audited(), 20, "audit records of both calls")


def test_ctrl_c_stops_every_process_it_started(gateway: Gateway) -> None:
    children = _descendants(gateway.process.pid)
    names = {" ".join(c.cmdline()) for c in children}
    for expected in ("nats-server", "services.cli registry", "services.cli connector", "services.cli audit",
                     "services.cli edge", "clock_http.py", "text_tools.py"):  # fmt: skip
        assert any(expected in n for n in names), f"{expected} not running under mcpgw up"
    gateway.process.send_signal(signal.SIGINT)
    assert gateway.process.wait(30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
