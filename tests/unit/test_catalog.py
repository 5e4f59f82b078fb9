import orjson

from services.edge.catalog import Catalog
from services.edge.transport import accepts
from services.registry.catalog import build_snapshot
from services.registry.config import ClientConfig
from services.registry.store import CatalogState, StoredServer, StoredTool

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


def server(name: str, state: str = "connected", tools: list[str] | None = None) -> StoredServer:
    config = ClientConfig(
        name=name,
        connection_type="http",
        connection_string="u",
        tools_to_execute=["*"] if tools is None else tools,
    )
    return StoredServer(config, state, "")


def tool(server_name: str, definition: dict[str, object]) -> StoredTool:
    return StoredTool(server_name, str(definition["name"]), orjson.dumps(definition).decode())


def test_snapshot_holds_tools_of_connected_servers_that_config_admits() -> None:
    state = CatalogState(
        revision=4,
        separator="_",
        servers=[
            server("db", tools=["query"]),
            server("down", state="disconnected"),
            server("none", tools=[]),
        ],
        tools=[
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
    listed = orjson.loads(catalog.list_result())["tools"]
    assert listed == [{**SCHEMA_TOOL, "name": "db_query"}]
    assert catalog.routes["db_query"].server == "db"
    assert catalog.routes["db_query"].tool == "query"


def test_accept_headers() -> None:
    assert accepts("application/json, text/event-stream", "text/event-stream")
    assert accepts("*/*", "application/json")
    assert accepts("text/*;q=0.5", "text/event-stream")
    assert not accepts("application/json", "text/event-stream")
    assert not accepts("text/html", "application/json")
