"""Resource URIs in what downstreams answer, rewritten to the names the aggregate shows.

On `/mcp` every resource is `mcpgw://<server>/<uri>`; a URI a client reads in a result
(a resource's contents, a resource link or an embedded resource in a tool result or a
prompt) must be one it can read back through the gateway, so it gets the same name.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.naming import exposed_uri


def exposed_result(server: str, result_json: bytes) -> bytes:
    """`result_json` with every resource URI in it as the aggregate shows it (unchanged bytes
    when it names none, which is the common case and costs one scan)."""
    if b'"uri"' not in result_json:
        return result_json
    result = orjson.loads(result_json)
    if not isinstance(result, dict):
        return result_json
    for item in _list(result.get("contents")):
        _rename(server, item)
    for item in _list(result.get("content")):
        _rename_content(server, item)
    for message in _list(result.get("messages")):
        _rename_content(server, message.get("content"))
    return orjson.dumps(result)


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _rename(server: str, item: object) -> None:
    if isinstance(item, dict) and isinstance(item.get("uri"), str):
        item["uri"] = exposed_uri(server, item["uri"])


def _rename_content(server: str, content: object) -> None:
    """A content block: a resource link names its URI, an embedded resource its resource's."""
    if not isinstance(content, dict):
        return
    if content.get("type") == "resource_link":
        _rename(server, content)
    elif content.get("type") == "resource":
        _rename(server, content.get("resource"))
