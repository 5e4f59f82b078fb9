"""How downstream tools, prompts and resources are named at the aggregate `/mcp`.

Tools and prompts are `<server><separator><name>`.

Exposed names must fit what clients enforce, `^[a-zA-Z0-9_-]{1,64}$`. A joined name
that does not fit keeps its first 55 characters (others replaced by `_`) and gets
`_` plus the first 8 hex digits of the SHA-256 of the joined name, so it is
deterministic and two long names never shorten to the same string by accident.
Routing never splits a name: edges look the exposed name up in the catalog.

Resource URIs and URI templates are `mcpgw://<server>/<original>`: the original
follows verbatim, so the mapping is lossless both ways and a template stays a
template (`mcpgw://docs/file:///{path}`).
"""

from __future__ import annotations

import hashlib
import re

EXPOSED_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
SERVER_NAME = re.compile(r"[a-zA-Z0-9_-]{1,40}")
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_DIGEST_LEN = 8
MAX_LEN = 64


def server_name_problem(name: str, separator: str) -> str | None:
    """Why `name` cannot be a server name, or None when it can."""
    if not SERVER_NAME.fullmatch(name):
        return "must be 1 to 40 characters of letters, digits, '_' and '-'"
    if separator in name:
        return f"must not contain the tool separator {separator!r}"
    return None


def exposed_tool_name(server: str, tool: str, separator: str) -> str:
    joined = f"{server}{separator}{tool}"
    if EXPOSED_NAME.fullmatch(joined):
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:_DIGEST_LEN]
    head = _INVALID.sub("_", joined)[: MAX_LEN - _DIGEST_LEN - 1]
    return f"{head}_{digest}"


URI_SCHEME = "mcpgw://"


def exposed_uri(server: str, uri: str) -> str:
    return f"{URI_SCHEME}{server}/{uri}"


def split_exposed_uri(exposed: str) -> tuple[str, str] | None:
    """(server, original URI) of an exposed URI, or None when it is not one."""
    if not exposed.startswith(URI_SCHEME):
        return None
    server, slash, uri = exposed[len(URI_SCHEME) :].partition("/")
    if not slash or not SERVER_NAME.fullmatch(server) or not uri:
        return None
    return server, uri
