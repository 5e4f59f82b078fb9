"""`mcpgw health`: whether a service serves, for container health checks.

With a service and its arguments it probes that service where its settings say it listens;
with none it reads them from process 1, so one image's HEALTHCHECK fits every service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from services.probes import grpc_serving, http_ok
from services.settings import AuditSettings, CommonSettings, ConnectorSettings, EdgeSettings, RegistrySettings

SERVICES = ("registry", "connector", "edge", "audit")
PROCESS_ONE = Path("/proc/1/cmdline")
# Where a service listening on every address is asked.
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


class HealthError(Exception):
    """No service to probe: process 1 runs none and none was named."""


def service_argv(argv: Sequence[str]) -> list[str]:
    """`argv` from the service's name on (`mcpgw edge --port 8080` → `edge --port 8080`)."""
    for index, word in enumerate(argv):
        if word in SERVICES:
            return list(argv[index:])
    raise HealthError(f"no mcpgw service in {' '.join(argv)!r}; name one: {', '.join(SERVICES)}")


def process_one_argv() -> list[str]:
    return [part.decode() for part in PROCESS_ONE.read_bytes().split(b"\0") if part]


def local(address: str) -> str:
    """host:port as asked from inside the container: a wildcard host is loopback."""
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host in WILDCARDS else host}:{port}"


def target(settings: CommonSettings) -> tuple[str, str]:
    """("http", url) or ("grpc", host:port): where the service's health is asked."""
    if isinstance(settings, EdgeSettings):
        return "http", f"http://{local(f'{settings.edge_host}:{settings.edge_port}')}/healthz"
    if isinstance(settings, RegistrySettings):
        return "grpc", local(settings.registry_listen)
    if isinstance(settings, ConnectorSettings):
        return "grpc", local(settings.connector_listen)
    if isinstance(settings, AuditSettings):
        return "grpc", local(settings.audit_listen)
    raise HealthError(f"no health probe for {type(settings).__name__}")


async def serving(kind: str, where: str) -> bool:
    return await (http_ok(where) if kind == "http" else grpc_serving(where))


def check(settings: CommonSettings) -> bool:
    kind, where = target(settings)
    return asyncio.run(serving(kind, where))
