"""Code Mode's stubs and meta-tools without a gateway: identifiers, signatures from JSON
Schema, the virtual files of each binding level, and what a tool's result is to a script."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.contracts import registry_pb2
from services.edge.catalog import build_view
from services.edge.codemode import meta
from services.edge.codemode.sandbox import Sandbox
from services.edge.codemode.stubs import (
    Binding,
    Tool,
    file_names,
    identifier,
    modules,
    python_type,
    read_file,
    signature,
    tool_docs,
)

SEARCH = Tool(
    "github_search_issues",
    "github",
    "search_issues",
    {
        "name": "search_issues",
        "description": "Search issues.\nSecond line.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for"},
                "limit": {"type": "integer"},
                "state": {"enum": ["open", "closed"]},
                "user-id": {"type": "string"},
            },
            "required": ["query"],
        },
        "outputSchema": {"type": "object", "properties": {"total": {"type": "integer"}}},
    },
)


@pytest.mark.parametrize(
    ("name", "reserved", "expected"),
    [
        ("github", frozenset(), "github"),
        ("get-sum", frozenset(), "get_sum"),
        ("9lives", frozenset(), "_9lives"),
        ("class", frozenset(), "class_"),
        ("time", frozenset({"time"}), "time_"),
        ("a.b c", frozenset(), "a_b_c"),
    ],
)
def test_identifier(name: str, reserved: frozenset[str], expected: str) -> None:
    assert identifier(name, reserved) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "str"),
        ({"type": "integer"}, "int"),
        ({"type": ["string", "null"]}, "str | None"),
        ({"type": "array", "items": {"type": "number"}}, "list[float]"),
        ({"type": "object"}, "dict[str, Any]"),
        ({"enum": ["a", 1]}, "Literal['a', 1]"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "str | int"),
        ({"anyOf": [{"type": "string"}, {}]}, "Any"),
        ({}, "Any"),
        ("not a schema", "Any"),
    ],
)
def test_python_type(schema: Any, expected: str) -> None:
    assert python_type(schema) == expected


def test_a_signature_is_keyword_only_required_first_with_the_rest_for_unspellable_names() -> None:
    assert signature("search_issues", SEARCH) == (
        "async def search_issues(*, query: str, limit: int | None = None, "
        "state: Literal['open', 'closed'] | None = None, **arguments: Any) -> Any"
    )


def test_a_server_module_names_its_tools_and_the_tool_binding_has_a_file_each() -> None:
    found = modules([SEARCH, Tool("time_now", "time", "now", {"name": "now"})])
    # A server named like one of the sandbox's own modules is renamed rather than shadowed.
    assert list(found) == ["github", "time_"]
    assert file_names(found, Binding.SERVER) == ["servers/github.pyi", "servers/time_.pyi"]
    assert file_names(found, Binding.TOOL) == ["servers/github/search_issues.pyi", "servers/time_/now.pyi"]
    stub = read_file(found, Binding.SERVER, "servers/github.pyi")
    assert stub is not None and "import github" in stub and '"""Search issues."""' in stub
    one = read_file(found, Binding.TOOL, "servers/time_/now.pyi")
    assert one is not None and "async def now() -> Any: ..." in one
    assert read_file(found, Binding.SERVER, "servers/github/search_issues.pyi") is None
    assert read_file(found, Binding.SERVER, "../etc/passwd") is None


def test_tool_docs_give_every_argument_and_the_output_schema() -> None:
    docs = tool_docs(modules([SEARCH])["github"], "search_issues")
    assert "query (str, required): What to look for" in docs
    assert "limit (int, optional):" in docs
    assert "**arguments" in docs and '"total"' in docs


@pytest.mark.parametrize(
    ("result", "value"),
    [
        ({"content": [{"type": "text", "text": "hi"}]}, "hi"),
        ({"content": [{"type": "text", "text": '{"a": 1}'}]}, {"a": 1}),
        ({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, ["a", "b"]),
        ({"content": [{"type": "text", "text": "x"}], "structuredContent": {"n": 2}}, {"n": 2}),
        ({"content": [{"type": "image", "data": "AA==", "mimeType": "image/png"}]},
         [{"type": "image", "data": "AA==", "mimeType": "image/png"}]),
    ],
)  # fmt: skip
def test_a_tool_result_is_to_a_script_its_structured_content_else_its_text(result: Any, value: Any) -> None:
    assert meta.script_value(orjson.dumps(result)) == value


def test_a_tool_error_raises_in_the_script_with_its_message() -> None:
    with pytest.raises(RuntimeError, match="rate limited upstream"):
        meta.script_value(b'{"content":[{"type":"text","text":"rate limited upstream"}],"isError":true}')


def snapshot(code_mode_servers: set[str], everywhere: bool = False) -> registry_pb2.Snapshot:
    mode = registry_pb2.TOOL_MODE_CODE if everywhere else registry_pb2.TOOL_MODE_UNSPECIFIED
    snap = registry_pb2.Snapshot(settings=registry_pb2.GatewaySettings(tool_mode=mode))
    for server in ("docs", "web"):
        snap.servers.append(
            registry_pb2.ServerView(
                name=server,
                state="connected",
                capabilities_json=b'{"tools":{}}',
                code_mode=server in code_mode_servers,
            )
        )
        snap.tools.append(
            registry_pb2.CatalogEntry(
                exposed_name=f"{server}_find", server=server, name="find", definition_json=b'{"name":"find"}'
            )
        )
    return snap


def listed(view: Any) -> list[str]:
    return [t["name"] for t in orjson.loads(view.tools.page(None))["tools"]]


def test_a_code_mode_server_is_reached_through_the_meta_tools_and_the_others_stay_listed() -> None:
    view = build_view(snapshot({"web"}), None)
    assert listed(view) == ["docs_find", *[d["name"] for d in meta.DEFINITIONS]]
    assert set(view.tool_routes) == {"docs_find"}
    assert view.code is not None and list(view.code.modules) == ["web"]
    assert set(view.code.inner.tool_routes) == {"web_find"}


def test_a_view_in_code_mode_lists_only_the_meta_tools_and_none_without_it() -> None:
    for view in (
        build_view(snapshot(set()), None, mode=registry_pb2.TOOL_MODE_CODE),
        build_view(snapshot(set(), True), None),
    ):
        assert set(listed(view)) == meta.NAMES and not view.tool_routes
        assert view.code is not None and set(view.code.inner.tool_routes) == {"docs_find", "web_find"}
    classic = build_view(snapshot(set()), None)
    assert classic.code is None and listed(classic) == ["docs_find", "web_find"]


@pytest.mark.anyio
async def test_meta_tools_refuse_unusable_arguments_and_unknown_names_clearly() -> None:
    found, sandbox = modules([SEARCH]), Sandbox()

    async def never(exposed: str, arguments: dict[str, Any]) -> Any:
        raise AssertionError("no tool is called")

    with pytest.raises(meta.ArgumentsError, match='"fileName" must be a string'):
        await meta.answer(meta.READ_FILE, {}, found, Binding.SERVER, sandbox, never)
    partly = {"fileName": "servers/github.pyi", "startLine": 0}
    with pytest.raises(meta.ArgumentsError, match='"startLine" must be an integer'):
        await meta.answer(meta.READ_FILE, partly, found, Binding.SERVER, sandbox, never)
    wrong = {"server": "github", "tool": "nope"}
    docs = await meta.answer(meta.TOOL_DOCS, wrong, found, Binding.SERVER, sandbox, never)
    assert docs.is_error and b"No tool 'nope' on server 'github'" in docs.result_json


def test_a_view_in_search_mode_lists_the_search_and_keeps_every_tool_callable() -> None:
    view = build_view(snapshot(set()), None, mode=registry_pb2.TOOL_MODE_SEARCH)
    assert listed(view) == ["searchTools", "callTool"]
    assert set(view.tool_routes) == {"docs_find", "web_find"}
    assert view.search is not None and len(view.search) == 2
