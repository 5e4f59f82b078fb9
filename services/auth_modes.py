"""Bifrost's `mcp_server_auth_mode` names for the contract's AuthMode (registry, edge and CLI agree)."""

from __future__ import annotations

from services.contracts import registry_pb2

AUTH_MODES: dict[str, registry_pb2.AuthMode.ValueType] = {
    "headers": registry_pb2.AUTH_MODE_HEADERS,
    "both": registry_pb2.AUTH_MODE_BOTH,
    "oauth": registry_pb2.AUTH_MODE_OAUTH,
}
NAMES = {mode: name for name, mode in AUTH_MODES.items()}


def mode_name(mode: registry_pb2.AuthMode.ValueType) -> str | None:
    """The setting's name, None when it was never set."""
    return NAMES.get(mode)
