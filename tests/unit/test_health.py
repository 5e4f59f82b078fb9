"""`mcpgw health`: which service a container runs, and where it is asked."""

from __future__ import annotations

import pytest

from services import bus
from services.health import HealthError, local, service_argv, target
from services.settings import AuditSettings, ConnectorSettings, EdgeSettings, RegistrySettings


def test_the_service_is_found_in_process_ones_command_line() -> None:
    argv = ["/usr/local/bin/python", "/usr/local/bin/mcpgw", "--log-level", "INFO", "edge", "--port", "9000"]
    assert service_argv(argv) == ["edge", "--port", "9000"]
    with pytest.raises(HealthError, match="no mcpgw service"):
        service_argv(["/sbin/init"])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (EdgeSettings(edge_host="0.0.0.0", edge_port=8080), ("http", "http://127.0.0.1:8080/healthz")),
        (EdgeSettings(edge_host="10.0.0.5", edge_port=81), ("http", "http://10.0.0.5:81/healthz")),
        (RegistrySettings(registry_listen="0.0.0.0:50051"), ("grpc", "127.0.0.1:50051")),
        (ConnectorSettings(connector_listen="[::]:50052"), ("grpc", "127.0.0.1:50052")),
        (AuditSettings(audit_listen="audit:50053"), ("grpc", "audit:50053")),
    ],
    ids=["edge-wildcard", "edge-address", "registry", "connector-ipv6-wildcard", "audit-named"],
)
def test_each_service_is_asked_where_it_listens(settings: object, expected: tuple[str, str]) -> None:
    assert target(settings) == expected  # type: ignore[arg-type]


def test_a_wildcard_host_is_asked_on_loopback() -> None:
    assert local(":50051") == "127.0.0.1:50051"
    assert local("registry:50051") == "registry:50051"


def test_a_nats_url_may_name_every_node_of_a_cluster() -> None:
    assert bus.servers("nats://a:4222, nats://b:4222,,nats://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    with pytest.raises(bus.BusUnavailableError, match="empty"):
        bus.servers(" , ")
