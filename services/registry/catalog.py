"""What edges and connectors are served: the snapshot and the server configs, as protobufs."""

from __future__ import annotations

import logging

from services.contracts import registry_pb2
from services.registry.config import ClientConfig
from services.registry.naming import exposed_tool_name
from services.registry.store import CatalogState, StoredServer

log = logging.getLogger(__name__)


def allowed(tools_to_execute: list[str], tool: str) -> bool:
    """Bifrost's filter: ["*"] admits every tool, otherwise only those listed."""
    return "*" in tools_to_execute or tool in tools_to_execute


def build_snapshot(state: CatalogState) -> registry_pb2.Snapshot:
    """The tools of connected servers that their config admits, under their exposed names."""
    snapshot = registry_pb2.Snapshot(
        revision=state.revision,
        settings=registry_pb2.GatewaySettings(tool_separator=state.separator),
    )
    visible: dict[str, ClientConfig] = {}
    for server in state.servers:
        snapshot.servers.append(
            registry_pb2.ServerView(
                name=server.config.name,
                connection_type=server.config.connection_type,
                state=server.state,
                error=server.error,
            )
        )
        if server.state == "connected":
            visible[server.config.name] = server.config
    taken: set[str] = set()
    for tool in state.tools:
        config = visible.get(tool.server)
        if config is None or not allowed(config.tools_to_execute, tool.name):
            continue
        exposed = exposed_tool_name(tool.server, tool.name, state.separator)
        if exposed in taken:
            log.warning("tool %r of %r collides with another as %r; hidden", tool.name, tool.server, exposed)
            continue
        taken.add(exposed)
        snapshot.tools.append(
            registry_pb2.ToolEntry(
                exposed_name=exposed,
                server=tool.server,
                name=tool.name,
                definition_json=tool.definition_json.encode(),
            )
        )
    return snapshot


def server_config(server: StoredServer) -> registry_pb2.ServerConfig:
    config = server.config
    out = registry_pb2.ServerConfig(
        name=config.name,
        connection_type=config.connection_type,
        connection_string=config.connection_string or "",
        headers=config.headers,
        tool_execution_timeout_seconds=config.tool_execution_timeout or 0.0,
    )
    if config.stdio_config is not None:
        stdio = config.stdio_config
        out.stdio.command = stdio.command
        out.stdio.args.extend(stdio.args)
        out.stdio.cwd = stdio.cwd or ""
        if isinstance(stdio.envs, dict):
            out.stdio.env.update(stdio.envs)
        else:
            out.stdio.inherit_env.extend(stdio.envs)
    return out
