import orjson
import pytest

from services.edge.admission import accepts, endpoint_name
from services.edge.catalog import Catalog, Route
from services.edge.errors import InvalidParamsError
from services.registry.catalog import build_snapshot
from services.registry.config import ClientConfig
from services.registry.store import CatalogState, StoredItem, StoredServer

SCHEMA_TOOL: dict[str, object] = {
    "name": "query",
    "title": "Query",
    "inputSchema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"id": {"type": "string"}},
        "properties": {"id": {"$ref": "#/$defs/id"}},
        "additionalProperties": False,
    },
    "outputSchema": {"type": "object"},
    "annotations": {"readOnlyHint": True},
    "icons": [{"src": "https://example.invalid/i.png"}],
    "_meta": {"vendor": {"x": 1}},
}


def server(
    name: str, state: str = "connected", tools: list[str] | None = None, capabilities: str = '{"tools":{}}'
) -> StoredServer:
    config = ClientConfig(
        name=name,
        connection_type="http",
        connection_string="http://127.0.0.1:1/mcp",
        tools_to_execute=["*"] if tools is None else tools,
    )
    return StoredServer(config, state, "", capabilities)


def item(server_name: str, kind: str, definition: dict[str, object]) -> StoredItem:
    key = {"tool": "name", "prompt": "name", "resource": "uri", "template": "uriTemplate"}[kind]
    return StoredItem(server_name, kind, str(definition[key]), orjson.dumps(definition).decode())


def tool(server_name: str, definition: dict[str, object]) -> StoredItem:
    return item(server_name, "tool", definition)


RICH = '{"tools":{},"prompts":{},"resources":{"subscribe":true},"completions":{},"logging":{}}'


def test_snapshot_holds_tools_of_connected_servers_that_config_admits() -> None:
    state = CatalogState(
        revision=4,
        separator="_",
        servers=[
            server("db", tools=["query"]),
            server("down", state="disconnected"),
            server("none", tools=[]),
        ],
        items=[
            tool("db", SCHEMA_TOOL),
            tool("db", {"name": "drop", "inputSchema": {"type": "object"}}),
            tool("down", {"name": "x", "inputSchema": {"type": "object"}}),
            tool("none", {"name": "y", "inputSchema": {"type": "object"}}),
        ],
    )
    snapshot = build_snapshot(state)
    assert snapshot.revision == 4
    assert [(t.exposed_name, t.server, t.name) for t in snapshot.tools] == [("db_query", "db", "query")]
    assert {s.name: s.state for s in snapshot.servers} == {
        "db": "connected",
        "down": "disconnected",
        "none": "connected",
    }


def test_edge_catalog_renames_tools_and_keeps_every_other_field() -> None:
    snapshot = build_snapshot(CatalogState(1, "_", [server("db")], [tool("db", SCHEMA_TOOL)]))
    catalog = Catalog.from_snapshot(snapshot)
    listed = orjson.loads(catalog.aggregate.tools.page(None))["tools"]
    assert listed == [{**SCHEMA_TOOL, "name": "db_query"}]
    assert catalog.routes["db_query"] == Route("db", "query")


def mixed_catalog(page_size: int = 500) -> Catalog:
    state = CatalogState(
        1,
        "_",
        [server("docs", capabilities=RICH), server("db")],
        [
            tool("db", SCHEMA_TOOL),
            item("docs", "prompt", {"name": "summary", "arguments": [{"name": "topic", "required": True}]}),
            item(
                "docs",
                "resource",
                {"uri": "file:///readme.md", "name": "readme", "mimeType": "text/markdown"},
            ),
            item("docs", "template", {"uriTemplate": "file:///{path}", "name": "file"}),
        ],
    )
    return Catalog.from_snapshot(build_snapshot(state), page_size)


def test_aggregate_namespaces_prompts_and_resource_uris_losslessly() -> None:
    view = mixed_catalog().aggregate
    assert orjson.loads(view.prompts.page(None))["prompts"][0]["name"] == "docs_summary"
    assert view.prompt_routes["docs_summary"] == Route("docs", "summary")
    resource = orjson.loads(view.resources.page(None))["resources"][0]
    assert resource == {
        "uri": "mcpgw://docs/file:///readme.md",
        "name": "readme",
        "mimeType": "text/markdown",
    }
    template = orjson.loads(view.resource_templates.page(None))["resourceTemplates"][0]
    assert template["uriTemplate"] == "mcpgw://docs/file:///{path}"
    # A URI expanded from the exposed template maps back to the server and its own URI.
    assert view.resource_route("mcpgw://docs/file:///src/a.py") == Route("docs", "file:///src/a.py")
    assert view.resource_route("file:///readme.md") is None
    assert view.resource_route("mcpgw://ghost/file:///x") is None


def test_per_server_views_are_unprefixed_and_hold_one_server() -> None:
    catalog = mixed_catalog()
    docs = catalog.view_for("docs", None)
    assert docs is not None
    assert orjson.loads(docs.resources.page(None))["resources"][0]["uri"] == "file:///readme.md"
    assert docs.prompt_routes == {"summary": Route("docs", "summary")}
    assert docs.tool_routes == {}
    assert docs.resource_route("file:///readme.md") == Route("docs", "file:///readme.md")
    db = catalog.view_for("db", None)
    assert db is not None and db.tool_routes == {"query": Route("db", "query")}
    assert catalog.view_for("ghost", None) is None


def test_capabilities_are_what_the_visible_servers_support() -> None:
    catalog = mixed_catalog()
    assert catalog.aggregate.capabilities == {
        "tools": {"listChanged": True},
        "prompts": {"listChanged": True},
        "resources": {"subscribe": True, "listChanged": True},
        "completions": {},
        "logging": {},
    }
    db = catalog.view_for("db", None)
    assert db is not None and db.capabilities == {"tools": {"listChanged": True}}


def test_lists_are_paged_with_opaque_cursors() -> None:
    tools = [tool("db", {"name": f"t{i}", "inputSchema": {"type": "object"}}) for i in range(5)]
    catalog = Catalog.from_snapshot(build_snapshot(CatalogState(1, "_", [server("db")], tools)), page_size=2)
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = orjson.loads(catalog.aggregate.tools.page(cursor))
        names += [t["name"] for t in page["tools"]]
        pages += 1
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert names == [f"db_t{i}" for i in range(5)] and pages == 3
    for bad in ("nonsense", 7, "bzk5OTk="):
        with pytest.raises(InvalidParamsError):
            catalog.aggregate.tools.page(bad)


def test_endpoint_names_come_from_the_path() -> None:
    assert endpoint_name("/mcp") == ""
    assert endpoint_name("/mcp/") == ""
    assert endpoint_name("/mcp/docs") == "docs"
    assert endpoint_name("/mcp/docs/") == "docs"


def test_accept_headers() -> None:
    assert accepts("application/json, text/event-stream", "text/event-stream")
    assert accepts("*/*", "application/json")
    assert accepts("text/*;q=0.5", "text/event-stream")
    assert not accepts("application/json", "text/event-stream")
    assert not accepts("text/html", "application/json")


def test_a_call_is_priced_by_its_tool_then_by_the_servers_star() -> None:
    priced = server("db")
    priced.config.tool_pricing.update({"query": 0.02, "*": 0.001})
    catalog = Catalog.from_snapshot(build_snapshot(CatalogState(1, "_", [priced, server("free")], [])))
    assert catalog.price("db", "query") == 0.02
    assert catalog.price("db", "other") == 0.001
    assert catalog.price("free", "anything") == 0.0
    assert catalog.price("nowhere", "query") == 0.0
