"""The edge's in-memory view of one registry snapshot: what to list and where to route."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from services.contracts import registry_pb2


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    tool: str


@dataclass(frozen=True, slots=True)
class Catalog:
    revision: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    # The `tools` array of tools/list, serialized once per snapshot, not per request.
    tools_json: bytes = b"[]"

    @classmethod
    def from_snapshot(cls, snapshot: registry_pb2.Snapshot) -> Catalog:
        routes: dict[str, Route] = {}
        tools = []
        for entry in snapshot.tools:
            definition = orjson.loads(entry.definition_json)
            # Only the name changes; every other field passes through as the downstream sent it.
            definition["name"] = entry.exposed_name
            tools.append(definition)
            routes[entry.exposed_name] = Route(entry.server, entry.name)
        return cls(snapshot.revision, routes, orjson.dumps(tools))

    def list_result(self) -> bytes:
        return b'{"tools":' + self.tools_json + b"}"
