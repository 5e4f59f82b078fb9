"""The console's forms: a tool's inputSchema as inputs, a submission back as arguments."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.console.forms import Kind, fields_of, header_lines, parse, picked, selections

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
