"""The names of the contract's ToolMode, as the config file, the API and the CLI write them."""

from __future__ import annotations

from typing import Literal

from services.contracts import registry_pb2

ToolModeName = Literal["classic", "code", "search"]
TOOL_MODES: dict[str, registry_pb2.ToolMode.ValueType] = {
    "classic": registry_pb2.TOOL_MODE_CLASSIC,
    "code": registry_pb2.TOOL_MODE_CODE,
    "search": registry_pb2.TOOL_MODE_SEARCH,
}
NAMES = {mode: name for name, mode in TOOL_MODES.items()}


def tool_mode_name(mode: registry_pb2.ToolMode.ValueType) -> ToolModeName:
    """The mode's name; unspecified reads as classic."""
    return NAMES.get(mode, "classic")  # type: ignore[return-value]
