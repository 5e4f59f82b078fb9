"""The edge's in-memory view of one registry snapshot: what each endpoint lists and where it routes.

`/mcp` shows every visible server under exposed names (`services.naming`);
`/mcp/{server}` shows one server as it is, unprefixed. Both are built once per
snapshot, so a list request only slices bytes that are already serialized.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.contracts import registry_pb2
from services.edge import toolsearch
from services.edge.codemode import meta
from services.edge.codemode.stubs import Binding, Module, Tool, modules
from services.edge.errors import InvalidParamsError
from services.edge.policy import SEARCH_OR_CODE, Governance, KeyPolicy
from services.edge.toolsearch import ToolIndex
from services.naming import split_exposed_uri

DEFAULT_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    # The tool or prompt name, or the resource URI, as the downstream knows it.
    name: str


class Listing:
    """One list method's entries, serialized once and served a page at a time."""

    def __init__(self, field: str, entries: list[bytes], page_size: int) -> None:
        self._field = field.encode()
        self._entries = entries
        self._page_size = page_size
        self._first = self._page(0)
        # Equal digests mean equal lists: what decides whether clients hear list_changed.
        self.digest = hashlib.sha256(b"\0".join(entries)).digest()

    def __len__(self) -> int:
        return len(self._entries)

    def page(self, cursor: object) -> bytes:
        """The result of a list request; InvalidParamsError for a cursor this edge did not issue."""
        if cursor is None:
            return self._first
        offset = _decode_cursor(cursor)
        if offset is None or offset > len(self._entries):
            raise InvalidParamsError("Invalid params: unknown cursor")
        return self._page(offset)

    def _page(self, offset: int) -> bytes:
        end = offset + self._page_size
        body = b'{"' + self._field + b'":[' + b",".join(self._entries[offset:end]) + b"]"
        if end < len(self._entries):
            body += b',"nextCursor":' + orjson.dumps(_encode_cursor(end))
        return body + b"}"


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode()


def _decode_cursor(cursor: object) -> int | None:
    if not isinstance(cursor, str):
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text[1:]) if text.startswith("o") and text[1:].isdigit() else None


@dataclass(frozen=True, slots=True)
class View:
    """What one endpoint serves: its lists, its routes back to servers and its capabilities."""

    tools: Listing
    prompts: Listing
    resources: Listing
    resource_templates: Listing
    tool_routes: dict[str, Route]
    prompt_routes: dict[str, Route]
    capabilities: dict[str, Any]
    # The server's own instructions on /mcp/{server}; the gateway's and every server's on /mcp.
    instructions: str = ""
    # The one server of a /mcp/{server} view; None for the aggregate /mcp.
    server: str | None = None
    servers: frozenset[str] = frozenset()
    # The servers that run tools/call as tasks, which tasks/list asks.
    task_servers: frozenset[str] = frozenset()
    # The inputSchema of each tool that routes arguments into Mcp-Param-* headers (x-mcp-header).
    header_schemas: dict[str, Any] = field(default_factory=dict)
    # Code Mode's tools, when the view offers its meta-tools (whose calls the edge answers).
    code: CodeView | None = None
    # The view's tools indexed for searchTools, when it offers search instead of a list.
    search: ToolIndex | None = None

    def resource_route(self, uri: object) -> Route | None:
        """The server and original URI behind a URI (or URI template) this view shows."""
        if not isinstance(uri, str) or not uri:
            return None
        if self.server is not None:
            return Route(self.server, uri)
        split = split_exposed_uri(uri)
        if split is None or split[0] not in self.servers:
            return None
        return Route(*split)


@dataclass(frozen=True, slots=True)
class CodeView:
    """The tools a view offers through Code Mode: as modules for scripts, and routed as a
    view of their own (a script's calls go through it, as a client's would)."""

    inner: View
    modules: dict[str, Module]
    binding: Binding = Binding.SERVER


# The listings each list_changed notification covers.
LIST_CHANGED_LISTINGS = {
    "tools": ("tools",),
    "prompts": ("prompts",),
    "resources": ("resources", "resource_templates"),
}


def changed_lists(before: View | None, after: View | None) -> set[str]:
    """The list_changed kinds ("tools", "prompts", "resources") that differ between two views."""
    empty = build_view(registry_pb2.Snapshot(), None)
    old, new = before or empty, after or empty
    return {
        kind
        for kind, names in LIST_CHANGED_LISTINGS.items()
        if any(getattr(old, n).digest != getattr(new, n).digest for n in names)
    }


def aggregate_capabilities(capabilities: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What a view can promise: the union of its servers' features, with the gateway's list_changed."""
    merged: dict[str, Any] = {"tools": {"listChanged": True}}
    for offered in capabilities:
        if "prompts" in offered:
            merged["prompts"] = {"listChanged": True}
        if isinstance(resources := offered.get("resources"), dict):
            current = merged.setdefault("resources", {"subscribe": False, "listChanged": True})
            current["subscribe"] = current["subscribe"] or resources.get("subscribe") is True
        if "completions" in offered:
            merged["completions"] = {}
        if "logging" in offered:
            merged["logging"] = {}
        if has_tasks(offered):
            merged["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    return merged


def has_tasks(capabilities: dict[str, Any]) -> bool:
    """Whether a server runs tools/call as tasks (revision 2025-11-25)."""
    tasks = capabilities.get("tasks")
    requests = tasks.get("requests") if isinstance(tasks, dict) else None
    tools = requests.get("tools") if isinstance(requests, dict) else None
    return isinstance(tools, dict) and "call" in tools


# Lists the gateway re-announces itself when its catalog changes (a server reconnects, a key's
# view changes), whether or not the downstream would.
LISTS = ("tools", "prompts", "resources")
AGGREGATE_INSTRUCTIONS = "Tools of several MCP servers, each named <server>_<tool>."


def server_capabilities(offered: dict[str, Any]) -> dict[str, Any]:
    """What /mcp/{server} promises: exactly the downstream's capabilities, with list_changed
    where it has a list (the gateway sends those)."""
    capabilities = dict(offered)
    for kind in LISTS:
        if isinstance(capabilities.get(kind), dict):
            capabilities[kind] = {**capabilities[kind], "listChanged": True}
    return capabilities


def aggregate_instructions(servers: Iterable[registry_pb2.ServerView]) -> str:
    """The aggregate's instructions: the gateway's, then each server's under its name."""
    parts = [AGGREGATE_INSTRUCTIONS]
    parts.extend(f"## {s.name}\n{s.instructions}" for s in servers if s.instructions)
    return "\n\n".join(parts)


def _entries(
    entries: Iterable[registry_pb2.CatalogEntry], key: str, exposed: bool, header_schemas: dict[str, Any]
) -> tuple[list[bytes], dict[str, Route]]:
    serialized: list[bytes] = []
    routes: dict[str, Route] = {}
    for entry in entries:
        definition = orjson.loads(entry.definition_json)
        name = entry.exposed_name if exposed else entry.name
        # Only the key changes; every other field passes through as the downstream sent it.
        definition[key] = name
        serialized.append(orjson.dumps(definition))
        routes[name] = Route(entry.server, entry.name)
        if b'"x-mcp-header"' in entry.definition_json:
            header_schemas[name] = definition.get("inputSchema")
    return serialized, routes


Allow = Callable[[str, registry_pb2.CatalogEntry], bool]
"""(kind: tool | prompt | resource, entry) -> whether a view shows the entry."""


def build_view(
    snapshot: registry_pb2.Snapshot,
    server: str | None,
    page_size: int = DEFAULT_PAGE_SIZE,
    allow: Allow | None = None,
    *,
    prefixed: bool | None = None,
    servers: Collection[str] | None = None,
    mode: registry_pb2.ToolMode.ValueType = registry_pb2.TOOL_MODE_UNSPECIFIED,
) -> View:
    """The aggregate view (`server` None) or the unprefixed view of one server, showing what
    `allow` admits of `servers` (all connected ones by default); a tool group's view is an
    aggregate that is not `prefixed`. Its tools are offered as `mode` says (a key's or group's
    code or search), else as the gateway's does; classic offers those of code mode client
    servers through Code Mode, and every other tool as itself."""

    def mine(kind: str, entries: Iterable[registry_pb2.CatalogEntry]) -> list[registry_pb2.CatalogEntry]:
        return [
            e
            for e in entries
            if (server is None or e.server == server)
            and (servers is None or e.server in servers)
            and (allow is None or allow(kind, e))
        ]

    exposed = server is None if prefixed is None else prefixed
    header_schemas: dict[str, Any] = {}
    offered = mine("tool", snapshot.tools)
    if mode not in SEARCH_OR_CODE:
        mode = snapshot.settings.tool_mode
    whole = mode == registry_pb2.TOOL_MODE_CODE
    coding = {s.name for s in snapshot.servers if s.code_mode}
    coded = [e for e in offered if whole or e.server in coding]
    direct = [e for e in offered if not (whole or e.server in coding)]
    tools, tool_routes = _entries(direct, "name", exposed, header_schemas)
    code = search = None
    if mode == registry_pb2.TOOL_MODE_SEARCH:
        # Every tool stays callable by name; the list offers the search instead.
        search = ToolIndex([(e, orjson.loads(d)) for e, d in zip(tool_routes, tools, strict=True)])
        tools = list(toolsearch.DEFINITIONS_JSON)
    if whole or coded:
        code = _code_view(coded, exposed, page_size, Binding.of(snapshot.settings.code_mode_binding))
        tools += meta.DEFINITIONS_JSON
    prompts, prompt_routes = _entries(mine("prompt", snapshot.prompts), "name", exposed, {})
    resources, _ = _entries(mine("resource", snapshot.resources), "uri", exposed, {})
    templates, _ = _entries(mine("resource", snapshot.resource_templates), "uriTemplate", exposed, {})
    connected = [
        s
        for s in snapshot.servers
        if s.state == "connected" and server in (None, s.name) and (servers is None or s.name in servers)
    ]
    return View(
        tools=Listing("tools", tools, page_size),
        prompts=Listing("prompts", prompts, page_size),
        resources=Listing("resources", resources, page_size),
        resource_templates=Listing("resourceTemplates", templates, page_size),
        tool_routes=tool_routes,
        prompt_routes=prompt_routes,
        capabilities=server_capabilities(orjson.loads(connected[0].capabilities_json or b"{}"))
        if server is not None and connected
        else aggregate_capabilities(orjson.loads(s.capabilities_json or b"{}") for s in connected),
        instructions=connected[0].instructions
        if server is not None and connected
        else aggregate_instructions(connected),
        server=server,
        servers=frozenset(s.name for s in connected),
        task_servers=frozenset(
            s.name for s in connected if has_tasks(orjson.loads(s.capabilities_json or b"{}"))
        ),
        header_schemas=header_schemas,
        code=code,
        search=search,
    )


def _code_view(
    coded: list[registry_pb2.CatalogEntry], exposed: bool, page_size: int, binding: Binding
) -> CodeView:
    """The tools scripts call, as a view of their own and as modules."""
    serialized, routes = _entries(coded, "name", exposed, {})
    empty = Listing("tools", [], page_size)
    inner = View(
        tools=Listing("tools", serialized, page_size),
        prompts=empty,
        resources=empty,
        resource_templates=empty,
        tool_routes=routes,
        prompt_routes={},
        capabilities={"tools": {}},
    )
    callable_tools = [
        Tool(name, route.server, route.name, orjson.loads(definition))
        for (name, route), definition in zip(routes.items(), serialized, strict=True)
    ]
    return CodeView(inner, modules(callable_tools), binding)


def _group_view(
    snapshot: registry_pb2.Snapshot,
    page_size: int,
    governance: Governance,
    group: str,
    mode: registry_pb2.ToolMode.ValueType,
) -> View:
    """/mcp/{group}: the group's tools that are not blocked, unprefixed."""
    selection = governance.groups[group]

    def chosen(kind: str, entry: registry_pb2.CatalogEntry) -> bool:
        return (
            kind == "tool"
            and selection.permits(entry.server, entry.name)
            and not governance.blocked(entry.server, entry.name)
        )

    return build_view(snapshot, None, page_size, chosen, prefixed=False, mode=mode)


@dataclass(frozen=True, slots=True)
class Catalog:
    """One snapshot's views: the global ones (no key) built at once, each key's on first use."""

    revision: int = 0
    aggregate: View = field(default_factory=lambda: build_view(registry_pb2.Snapshot(), None))
    per_server: dict[str, View] = field(default_factory=dict)
    groups: dict[str, View] = field(default_factory=dict)
    governance: Governance = field(default_factory=Governance)
    snapshot: registry_pb2.Snapshot = field(default_factory=registry_pb2.Snapshot)
    page_size: int = DEFAULT_PAGE_SIZE
    servers: dict[str, registry_pb2.ServerView] = field(default_factory=dict)
    _keyed: dict[tuple[str, str], View | None] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, snapshot: registry_pb2.Snapshot, page_size: int = DEFAULT_PAGE_SIZE) -> Catalog:
        governance = Governance.from_snapshot(snapshot)

        def unblocked(kind: str, entry: registry_pb2.CatalogEntry) -> bool:
            return kind != "tool" or not governance.blocked(entry.server, entry.name)

        aggregate = build_view(snapshot, None, page_size, unblocked)
        groups = {
            name: _group_view(
                snapshot,
                page_size,
                governance,
                name,
                governance.group_modes.get(name, registry_pb2.TOOL_MODE_UNSPECIFIED),
            )
            for name in governance.groups
        }
        return cls(
            snapshot.revision,
            aggregate,
            {name: build_view(snapshot, name, page_size, unblocked) for name in aggregate.servers},
            groups,
            governance,
            snapshot,
            page_size,
            {server.name: server for server in snapshot.servers},
        )

    def call_timeout(self, server: str, tool: str | None, default: float) -> float:
        """How long a call (or, without `tool`, any other request) to `server` may take."""
        view = self.servers.get(server)
        if view is None:
            return default
        per_tool = view.tool_timeouts_seconds.get(tool, 0.0) if tool else 0.0
        return per_tool or view.call_timeout_seconds or default

    def price(self, server: str, tool: str) -> float:
        """What one call of a server's tool costs: its own price, else the server's "*"."""
        view = self.servers.get(server)
        if view is None:
            return 0.0
        pricing = view.tool_pricing
        return pricing[tool] if tool in pricing else pricing.get("*", 0.0)

    def view_for(self, endpoint: str, key: KeyPolicy | None) -> View | None:
        """What `key` (None: no key) sees at /mcp (endpoint "") or /mcp/{endpoint}; None when
        it sees nothing there, which callers answer as for an endpoint that does not exist."""
        if key is None:
            if not endpoint:
                return self.aggregate
            return self.per_server.get(endpoint) or self.groups.get(endpoint)
        cached = (endpoint, key.id)
        if cached not in self._keyed:
            self._keyed[cached] = self._build_for(endpoint, key)
        return self._keyed[cached]

    def _build_for(self, endpoint: str, key: KeyPolicy) -> View | None:
        governance = self.governance
        if endpoint in self.groups:
            if endpoint not in key.groups:
                return None
            if endpoint in governance.group_modes or key.tool_mode not in SEARCH_OR_CODE:
                return self.groups[endpoint]
            return _group_view(self.snapshot, self.page_size, governance, endpoint, key.tool_mode)
        if endpoint and (endpoint not in self.per_server or endpoint not in key.reach.servers):
            return None

        def reachable(kind: str, entry: registry_pb2.CatalogEntry) -> bool:
            if kind != "tool":
                return True
            return key.reach.permits(entry.server, entry.name) and not governance.blocked(
                entry.server, entry.name
            )

        return build_view(
            self.snapshot,
            endpoint or None,
            self.page_size,
            reachable,
            servers=key.reach.servers,
            mode=key.tool_mode,
        )

    def needs_approval(self, key_id: str, server: str, tool: str) -> bool:
        """Whether a key's call of a server's tool waits for a person (tools_to_auto_execute)."""
        key = self.governance.by_id.get(key_id)
        return key is not None and key.reach.needs_approval(server, tool)

    def view_of(self, endpoint: str, key_id: str) -> View | None:
        """`view_for` by key id ("" for none): what a stream opened with that key sees now."""
        if not key_id:
            return self.view_for(endpoint, None)
        key = self.governance.by_id.get(key_id)
        return None if key is None else self.view_for(endpoint, key)

    @property
    def routes(self) -> dict[str, Route]:
        return self.aggregate.tool_routes
