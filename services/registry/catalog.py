"""What edges and connectors are served: the snapshot and the server configs, as protobufs."""

from __future__ import annotations

import logging
from collections.abc import Collection

from services.contracts import registry_pb2
from services.naming import exposed_tool_name, exposed_uri
from services.registry.authorization import with_discovered
from services.registry.config import ClientConfig, limits_message
from services.registry.store import CatalogState, Lifecycle, StoredServer
from services.registry.user_tokens import Grant
from services.tool_modes import TOOL_MODES

NO_GRANT = Grant()

log = logging.getLogger(__name__)


def allowed(tools_to_execute: list[str], tool: str) -> bool:
    """Bifrost's filter: ["*"] admits every tool, otherwise only those listed."""
    return "*" in tools_to_execute or tool in tools_to_execute


def build_snapshot(
    state: CatalogState,
    governance: registry_pb2.Governance | None = None,
    disabled: Collection[tuple[str, str]] = (),
) -> registry_pb2.Snapshot:
    """What connected servers offer (tools as their config admits, less those switched off),
    under their exposed names, and who may call what."""
    snapshot = registry_pb2.Snapshot(
        revision=state.revision,
        settings=registry_pb2.GatewaySettings(
            tool_separator=state.separator,
            tool_mode=TOOL_MODES.get(state.tools.mode, registry_pb2.TOOL_MODE_UNSPECIFIED),
            code_mode_binding=registry_pb2.CODE_MODE_BINDING_TOOL
            if state.tools.binding == "tool"
            else registry_pb2.CODE_MODE_BINDING_SERVER,
        ),
        governance=governance,
    )
    settings = snapshot.governance.settings
    if settings.auth_mode == registry_pb2.AUTH_MODE_UNSPECIFIED:
        # Unset, the mode is headers, unless someone must connect their own account: then
        # /mcp advertises OAuth too, so an interactive client can sign in and connect.
        per_user_oauth = any(s.config.per_user_oauth for s in state.servers)
        settings.auth_mode = registry_pb2.AUTH_MODE_BOTH if per_user_oauth else registry_pb2.AUTH_MODE_HEADERS
    visible: dict[str, ClientConfig] = {}
    for server in state.servers:
        snapshot.servers.append(
            registry_pb2.ServerView(
                name=server.config.name,
                connection_type=server.config.connection_type,
                state=server.state,
                error=server.error,
                capabilities_json=server.capabilities_json.encode(),
                call_timeout_seconds=server.config.tool_execution_timeout or 0.0,
                tool_timeouts_seconds=server.config.tool_timeouts,
                instructions=server.instructions,
                tool_pricing=server.config.tool_pricing,
                limits=limits_message(server.config),
                code_mode=server.config.is_code_mode_client,
            )
        )
        if server.state == "connected":
            visible[server.config.name] = server.config
    lists = {
        "tool": snapshot.tools,
        "prompt": snapshot.prompts,
        "resource": snapshot.resources,
        "template": snapshot.resource_templates,
    }
    taken: dict[str, set[str]] = {kind: set() for kind in lists}
    for item in state.items:
        config = visible.get(item.server)
        if config is None:
            continue
        if item.kind == "tool" and (
            not allowed(config.tools_to_execute, item.key) or (item.server, item.key) in disabled
        ):
            continue
        if item.kind in ("tool", "prompt"):
            exposed = exposed_tool_name(item.server, item.key, state.separator)
        else:
            exposed = exposed_uri(item.server, item.key)
        if exposed in taken[item.kind]:
            log.warning(
                "%s %r of %r collides with another as %r; hidden", item.kind, item.key, item.server, exposed
            )
            continue
        taken[item.kind].add(exposed)
        lists[item.kind].append(
            registry_pb2.CatalogEntry(
                exposed_name=exposed,
                server=item.server,
                name=item.key,
                definition_json=item.definition_json.encode(),
            )
        )
    return snapshot


def server_config(
    server: StoredServer,
    lifecycle: Lifecycle,
    grant: Grant = NO_GRANT,
    key_headers: dict[str, dict[str, str]] | None = None,
    discovered: str | None = None,
) -> registry_pb2.ServerConfig:
    """What connectors need of a server, with its OAuth client as discovered and registered."""
    config = server.config
    health = lifecycle.health
    out = registry_pb2.ServerConfig(
        name=config.name,
        connection_type=config.connection_type,
        connection_string=config.connection_string or "",
        headers=config.headers,
        tool_execution_timeout_seconds=config.tool_execution_timeout or 0.0,
        health=registry_pb2.HealthCheck(
            ping=config.is_ping_available,
            interval_seconds=health.check_interval,
            timeout_seconds=health.check_timeout,
            max_failures=health.max_consecutive_failures,
        ),
        manual_reconnect=not lifecycle.auto_reconnect,
        tool_timeouts_seconds=config.tool_timeouts,
        per_user=config.per_user,
        per_user_oauth=config.per_user_oauth,
        key_headers={k: registry_pb2.KeyHeaders(headers=h) for k, h in (key_headers or {}).items()},
        limits=limits_message(config),
    )
    if config.oauth is not None:
        oauth = with_discovered(config.oauth, discovered)
        out.oauth.CopyFrom(
            registry_pb2.OAuthClient(
                token_url=oauth.token_url,
                client_id=oauth.client_id,
                client_secret=oauth.client_secret,
                scope=oauth.scope,
                # Any grant counts as authorized, one kept before authorized_at was.
                authorized_at=grant.authorized_at or int(grant != NO_GRANT),
                grant_type=oauth.grant_type,
                resource=oauth.resource,
                token_endpoint_auth_method=oauth.token_endpoint_auth_method,
            )
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
