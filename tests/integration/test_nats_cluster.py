"""The gateway on a three-node NATS JetStream cluster, as deploy/ runs it: every service is
given every node, streams and buckets are kept on all three, and the loss of a node (the one
a client was talking to included) loses neither calls nor audit records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType, StreamInfo
from nats.js.errors import BadRequestError

from services import bus
from services.up.main import LOOPBACK, free_port, nats_server_binary
from tests.integration.test_gateway_http import call, initialize
from tests.processes import ROOT, running, service_tree, stdio_server, stop, wait_until

NODES = 3
pytestmark = pytest.mark.timeout(180)


@contextmanager
def nats_cluster(tmp: Path) -> Iterator[tuple[str, list[Any]]]:
    """Three nats-server nodes routed to each other; yields the comma-separated URL of all
    three and their processes, once JetStream has a meta leader."""
    clients = [free_port() for _ in range(NODES)]
    routes = [free_port() for _ in range(NODES)]
    everyone = ",".join(f"nats://{LOOPBACK}:{port}" for port in routes)
    tmp.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        processes = []
        for index in range(NODES):
            argv = [
                nats_server_binary(), "-a", LOOPBACK, "-p", str(clients[index]),
                "--server_name", f"n{index}", "-js", "-sd", str(tmp / f"n{index}"),
                "--cluster_name", "mcpgw-test", "--cluster", f"nats://{LOOPBACK}:{routes[index]}",
                "--routes", everyone,
            ]  # fmt: skip
            processes.append(stack.enter_context(running(argv, log=tmp / f"n{index}.log")))
        url = ",".join(f"nats://{LOOPBACK}:{port}" for port in clients)
        wait_until(lambda: anyio.run(_jetstream_ready, url), 30, "a JetStream meta leader")
        yield url, processes


async def _jetstream_ready(url: str) -> bool:
    try:
        nc = await nats.connect(bus.servers(url), connect_timeout=1, max_reconnect_attempts=0)
    except Exception:  # nats-py raises several unrelated types while nodes start
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


async def _audit_stream(url: str) -> StreamInfo:
    nc = await bus.connect(url, "test")
    try:
        return await nc.jetstream().stream_info(bus.AUDIT_STREAM)
    finally:
        await nc.close()


def test_streams_are_replicated_and_a_lost_node_loses_nothing(tmp_path: Path) -> None:
    with nats_cluster(tmp_path / "nats") as (url, nodes):
        server = stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")
        env = {"MCPGW_NATS_URL": url, "MCPGW_NATS_REPLICAS": str(NODES)}
        with service_tree(tmp_path, [server], env=env) as (base,):
            info = anyio.run(_audit_stream, url)
            assert info.config.num_replicas == NODES
            assert info.cluster is not None and len(info.cluster.replicas or []) == NODES - 1
            session = initialize(f"{base}/mcp")
            for index in range(5):
                answer = call(
                    f"{base}/mcp", session, "fixture_echo", {"text": f"before {index}"}, id=100 + index
                )
                assert answer["result"]["content"][0]["text"] == f"before {index}"
            # The stream's leader goes: the others elect another, and clients move over.
            leader = info.cluster.leader
            stop(nodes[int(str(leader).removeprefix("n"))])
            for index in range(5, 10):
                answer = call(
                    f"{base}/mcp", session, "fixture_echo", {"text": f"after {index}"}, id=100 + index
                )
                assert answer["result"]["content"][0]["text"] == f"after {index}"
            spans = tmp_path / "spans.jsonl"

            def audited() -> set[str]:
                if not spans.exists():
                    return set()
                lines = [json.loads(line) for line in spans.read_text().splitlines() if line]
                return {str(s["attributes"].get("jsonrpc.request.id")) for s in lines}

            wanted = {str(100 + i) for i in range(10)}
            wait_until(lambda: wanted <= audited(), 30, "every call's audit record")


def test_a_client_given_every_node_fails_over_when_its_node_goes(tmp_path: Path) -> None:
    with nats_cluster(tmp_path) as (url, nodes):

        async def scenario() -> None:
            nc = await bus.connect(url, "failover")
            try:
                await bus.ensure_audit_stream(nc, NODES)
                first = nc.connected_url
                assert first is not None
                index = url.split(",").index(f"nats://{first.netloc}")
                stop(nodes[index])
                with anyio.fail_after(20):
                    while not nc.is_connected or nc.connected_url == first:
                        await anyio.sleep(0.05)
                    ack = await nc.jetstream().publish("mcpgw.audit.test", b"{}")
                assert ack.stream == bus.AUDIT_STREAM
            finally:
                await nc.close()

        anyio.run(scenario)


def test_raising_the_replicas_of_existing_streams_and_buckets_updates_them(tmp_path: Path) -> None:
    with nats_cluster(tmp_path) as (url, _):

        async def scenario() -> None:
            nc = await bus.connect(url, "upgrade")
            js = nc.jetstream()
            try:
                # Made by a deployment of one replica; then MCPGW_NATS_REPLICAS=3.
                await bus.ensure_audit_stream(nc, 1)
                config = KeyValueConfig(
                    bucket="mcpgw-upgrade", storage=StorageType.FILE, history=1, replicas=1
                )
                kv = await bus.key_value(nc, config)
                await kv.put("kept", b"1")
                await bus.ensure_audit_stream(nc, NODES)
                config.replicas = NODES
                kv = await bus.key_value(nc, config)
                assert (await js.stream_info(bus.AUDIT_STREAM)).config.num_replicas == NODES
                assert (await js.stream_info("KV_mcpgw-upgrade")).config.num_replicas == NODES
                entry = await kv.get("kept")
                assert entry.value == b"1"
                # A bucket in a shape that cannot change is refused, not deleted.
                with pytest.raises(BadRequestError):
                    await bus.key_value(
                        nc, KeyValueConfig(bucket="mcpgw-upgrade", storage=StorageType.MEMORY)
                    )
            finally:
                await nc.close()

        anyio.run(scenario)
