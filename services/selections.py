"""Bifrost's mcp_configs entries (a key's or a group's tools of one server) as JSON objects
and as ToolSelection messages: the admin API and registry's store speak the same shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.contracts import registry_pb2


def selection_dict(selection: registry_pb2.ToolSelection) -> dict[str, Any]:
    """`{mcp_client_name, tools_to_execute[, tools_to_auto_execute]}` (the last only when set)."""
    shown: dict[str, Any] = {
        "mcp_client_name": selection.mcp_client_name,
        "tools_to_execute": list(selection.tools_to_execute),
    }
    if selection.HasField("auto_execute"):
        shown["tools_to_auto_execute"] = list(selection.auto_execute.tools)
    return shown


def selection_message(value: Mapping[str, Any]) -> registry_pb2.ToolSelection:
    """The message of a `selection_dict`-shaped object (a null tools_to_auto_execute is unset)."""
    message = registry_pb2.ToolSelection(
        mcp_client_name=value["mcp_client_name"], tools_to_execute=value.get("tools_to_execute") or []
    )
    auto = value.get("tools_to_auto_execute")
    if auto is not None:
        message.auto_execute.SetInParent()
        message.auto_execute.tools.extend(auto)
    return message
