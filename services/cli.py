"""The `mcpgw` command: `up` for everything, one subcommand per service for containers, and
the administration commands (`services/manage.py`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from services.health import HealthError, check, process_one_argv, service_argv
from services.manage import AUDIT_ACTIONS, COMMANDS, add_audit_actions, add_commands
from services.manage import run as manage
from services.runtime import EXIT_CONFIG, run_service
from services.settings import (
    AuditSettings,
    CommonSettings,
    ConfigurationError,
    ConnectorSettings,
    EdgeSettings,
    RegistrySettings,
    load,
)
from services.telemetry import setup_logging

SETTINGS: dict[str, type[CommonSettings]] = {
    "registry": RegistrySettings,
    "connector": ConnectorSettings,
    "edge": EdgeSettings,
    "audit": AuditSettings,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpgw", description="An MCP gateway.")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    parser.add_argument("--nats-url", default=None, help="NATS server (env MCPGW_NATS_URL)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole gateway on this machine")
    up.add_argument("--config", type=Path, default=None, help="gateway config file (JSON or YAML)")
    up.add_argument("--state-dir", type=Path, default=Path(".state"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument(
        "--sidecar",
        action="append",
        default=[],
        metavar="COMMAND",
        help="another process to run and stop with the gateway (e.g. a local MCP server)",
    )

    registry = commands.add_parser("registry", help="run the registry service")
    registry.add_argument("--listen", dest="registry_listen", default=None)
    registry.add_argument("--config", type=Path, default=None)
    registry.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in the state dir)")
    registry.add_argument("--state-dir", type=Path, default=None)

    connector = commands.add_parser("connector", help="run the connector service")
    connector.add_argument("--listen", dest="connector_listen", default=None)
    connector.add_argument("--registry", dest="registry_addr", default=None)

    edge = commands.add_parser("edge", help="run the edge service")
    edge.add_argument("--host", dest="edge_host", default=None)
    edge.add_argument("--port", dest="edge_port", type=int, default=None)
    edge.add_argument("--registry", dest="registry_addr", default=None)
    edge.add_argument("--connector", dest="connector_addr", default=None)

    audit = commands.add_parser("audit", help="run the audit service")
    audit.add_argument("--exporter", dest="audit_exporter", choices=["console", "file", "otlp"], default=None)
    audit.add_argument("--file", dest="audit_file", type=Path, default=None)
    add_audit_actions(audit)

    health = commands.add_parser("health", help="exit 0 while a service serves (a container's health check)")
    health.add_argument(
        "service_args", nargs=argparse.REMAINDER, help="the service and its arguments (default: process 1's)"
    )
    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    namespace = _parser().parse_args(argv)
    if namespace.command in COMMANDS or getattr(namespace, "action", None) in AUDIT_ACTIONS:
        return manage(namespace.command, namespace)
    if namespace.command == "health":
        return _health(namespace.service_args)
    if namespace.command == "up":
        return _up(namespace)
    command = namespace.command
    settings = _settings(namespace, f"mcpgw {command}")
    if settings is None:
        return EXIT_CONFIG
    setup_logging(settings.log_level, command, settings.log_format)
    logging.getLogger(__name__).debug(
        "settings: %s", settings.model_dump(exclude={"session_secret", "admin_token", "registry_key"})
    )
    if settings.heap_dir:
        from services.heap import trace_to

        trace_to(Path(settings.heap_dir), command)
    return run_service(command, lambda: _serve(command, settings))


def _settings(namespace: argparse.Namespace, who: str) -> CommonSettings | None:
    """The service's settings from its arguments and environment; None (said) when invalid."""
    args = dict(vars(namespace))
    args.pop("action", None)
    command = args.pop("command")
    try:
        return load(SETTINGS[command], **args)
    except ConfigurationError as exc:
        print(f"{who}: configuration error: {exc}", file=sys.stderr)
        return None


def _up(namespace: argparse.Namespace) -> int:
    from services.up.main import UpOptions, run

    setup_logging(namespace.log_level or "INFO", "up")
    options = UpOptions(
        config=namespace.config,
        state_dir=namespace.state_dir,
        host=namespace.host,
        port=namespace.port,
        nats_url=namespace.nats_url,
        sidecars=namespace.sidecar,
        log_level=namespace.log_level or "INFO",
    )
    try:
        return asyncio.run(run(options))
    except ConfigurationError as exc:
        print(f"mcpgw up: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _health(words: list[str]) -> int:
    """0 when the named service (else process 1's) answers its health probe, else 1."""
    try:
        namespace = _parser().parse_args(service_argv(words or process_one_argv()))
    except (HealthError, OSError) as exc:
        print(f"mcpgw health: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings = _settings(namespace, "mcpgw health")
    if settings is None:
        return EXIT_CONFIG
    return 0 if check(settings) else 1


async def _serve(command: str, settings: CommonSettings) -> None:
    if command == "registry":
        from services.registry.main import serve as serve_registry

        assert isinstance(settings, RegistrySettings)
        await serve_registry(settings)
    elif command == "connector":
        from services.connector.main import serve as serve_connector

        assert isinstance(settings, ConnectorSettings)
        await serve_connector(settings)
    elif command == "edge":
        from services.edge.main import serve as serve_edge

        assert isinstance(settings, EdgeSettings)
        await serve_edge(settings)
    else:
        from services.audit.main import serve as serve_audit

        assert isinstance(settings, AuditSettings)
        await serve_audit(settings)


if __name__ == "__main__":
    sys.exit(main())
