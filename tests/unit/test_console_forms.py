"""The console's forms: a tool's inputSchema as inputs, a submission back as arguments."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from starlette.datastructures import FormData

from services.edge.console.api import ApiFailure, path
from services.edge.console.forms import Kind, choices, fields_of, header_lines, parse, picked, selections
from services.edge.console.pages import Console

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "title": "Text", "description": "what to say"},
        "times": {"type": "integer", "default": 1},
        "ratio": {"type": "number"},
        "loud": {"type": "boolean"},
        "mood": {"enum": ["calm", "angry", 3]},
        "options": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "either": {"type": ["string", "null"]},
    },
    "required": ["text", "loud"],
}


def test_each_type_gets_its_input() -> None:
    fields = {f.name: f for f in fields_of(SCHEMA)}
    assert [f.name for f in fields_of(SCHEMA)][:2] == ["text", "loud"]
    assert {n: f.kind for n, f in fields.items()} == {
        "text": Kind.STRING,
        "times": Kind.INTEGER,
        "ratio": Kind.NUMBER,
        "loud": Kind.BOOLEAN,
        "mood": Kind.ENUM,
        "options": Kind.JSON,
        "tags": Kind.JSON,
        "maybe": Kind.INTEGER,
        "either": Kind.STRING,
    }
    assert fields["text"].required and fields["text"].description == "what to say"
    assert fields["times"].text == "1"
    assert fields["mood"].option_texts == ["calm", "angry", "3"]


def test_schemas_without_properties_have_no_inputs() -> None:
    assert fields_of(None) == []
    assert fields_of({"type": "object"}) == []
    assert fields_of({"properties": []}) == []


def test_a_submission_becomes_typed_arguments() -> None:
    fields = fields_of(SCHEMA)
    form = {
        "arg.text": "hi",
        "arg.times": "3",
        "arg.ratio": "0.5",
        "arg.loud": "false",
        "arg.mood": "3",
        "arg.options": '{"a": [1]}',
        "arg.tags": '["x"]',
        "arg.maybe": "",
    }
    parsed, shown = parse(fields, form)
    assert parsed.errors == {}
    assert parsed.arguments == {
        "text": "hi",
        "times": 3,
        "ratio": 0.5,
        "loud": False,
        "mood": 3,
        "options": {"a": [1]},
        "tags": ["x"],
    }
    assert {f.name: f.text for f in shown}["times"] == "3"


def test_wrong_values_are_named_per_field() -> None:
    parsed, _ = parse(
        fields_of(SCHEMA),
        {"arg.times": "1.5", "arg.ratio": "nan", "arg.mood": "sad", "arg.options": "{", "arg.loud": ""},
    )
    assert parsed.errors == {
        "times": "must be a whole number",
        "ratio": "must be a finite number",
        "mood": "must be one of the listed values",
        "options": "must be JSON",
        "loud": "is required",
    }
    # A required string left empty is sent empty: the tool decides what it means.
    assert parsed.arguments == {"text": ""}


def test_headers_and_tool_pickers() -> None:
    assert header_lines("Authorization: Bearer x\n\n X-Team : a:b ") == {
        "Authorization": "Bearer x",
        "X-Team": "a:b",
    }
    with pytest.raises(ValueError, match="Name: value"):
        header_lines("no colon")
    chosen = ["fx/echo", "fx/weather", "other/*", "other/x", "bad"]
    configs = selections(chosen)
    assert configs == [
        {"mcp_client_name": "fx", "tools_to_execute": ["echo", "weather"]},
        {"mcp_client_name": "other", "tools_to_execute": ["*"]},
    ]
    assert picked(configs) == {"fx/echo", "fx/weather", "other/*"}


def test_the_picker_keeps_chosen_tools_the_catalog_lacks_now() -> None:
    """A key's tool that is disabled, or whose server is down, stays ticked, so that saving
    an unrelated change keeps it (PATCH replaces mcp_configs)."""
    listed = [("alpha", "echo"), ("alpha", "add")]
    chosen = {"alpha/echo", "alpha/gone", "beta/*", "down/tool"}
    assert choices(listed, chosen) == [
        ("alpha", [("add", True), ("echo", True), ("gone", False)]),
        ("beta", []),
        ("down", [("tool", False)]),
    ]
    templates = Console(None, None, None, None).templates  # type: ignore[arg-type]
    picker = templates.get_template("macros.html").module.picker  # type: ignore[attr-defined]
    shown = str(picker(choices(listed, chosen), chosen, "Tools"))
    ticked = set(re.findall(r'name="tools" value="([^"]+)" checked', shown))
    assert ticked == chosen
    assert shown.count("not in the catalog now") == 2


def test_a_name_is_one_quoted_segment_of_an_api_path() -> None:
    assert path("api", "tools", "evil", "odd#name") == "/api/tools/evil/odd%23name"
    assert path("api", "tools", "s", "a?b/../c d") == "/api/tools/s/a%3Fb%2F..%2Fc%20d"
    assert path("ui", "keys", "k1") == "/ui/keys/k1"


def test_a_field_with_an_error_says_so_to_assistive_technology() -> None:
    invalid = Console(None, None, None, None).templates.get_template("macros.html").module.invalid  # type: ignore[arg-type,attr-defined]
    failure = ApiFailure(422, "taken", "name")
    assert str(invalid(failure, "name")) == ' aria-invalid="true" aria-describedby="name-error"'
    assert (
        str(invalid(failure, "name", "name-help"))
        == ' aria-invalid="true" aria-describedby="name-help name-error"'
    )
    assert str(invalid(failure, "price")) == ""
    assert str(invalid(None, "name", "name-help")) == ' aria-describedby="name-help"'


class RecordingApi:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    async def send(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))


@pytest.mark.parametrize(
    ("tool", "sent"),
    [("odd#name", "/api/tools/evil/odd%23name"), ("a?b/../c", "/api/tools/evil/a%3Fb%2F..%2Fc")],
)
def test_toggling_a_tool_names_it_whole_in_the_api_path(tool: str, sent: str) -> None:
    api = RecordingApi()
    console = Console(api, None, None, None)  # type: ignore[arg-type]
    form = FormData({"server": "evil", "tool": tool, "enabled": "false"})
    answer = anyio.run(console.tools.toggle_tool, None, None, form)  # type: ignore[arg-type]
    assert answer.status_code == 303
    assert api.sent == [("PUT", sent, {"enabled": False})]
