"""Forms the console builds from data: a tool's `inputSchema` as fields, and a submitted form
back as the call's arguments, each value checked against its field's type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from starlette.datastructures import FormData

PREFIX = "arg."


class Kind(StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    ENUM = "enum"
    # Objects, arrays and anything the form cannot render: typed as JSON.
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Field:
    """One argument's input: its form name, what it takes, and what it showed last."""

    name: str
    kind: Kind
    required: bool
    title: str
    description: str = ""
    options: tuple[Any, ...] = ()
    default: Any = None
    # The text the input shows (the default at first, the submitted text after an error).
    text: str = ""

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def option_texts(self) -> list[str]:
        return [_text(o) for o in self.options]


@dataclass
class Parsed:
    """A submission's arguments, or the message of each field that was wrong."""

    arguments: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _effective(schema: Any) -> dict[str, Any]:
    """The schema of a value that may also be null (pydantic's Optional): the other type."""
    if not isinstance(schema, dict):
        return {}
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list):
            others = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(others) == 1 and isinstance(others[0], dict):
                return {**{k: v for k, v in schema.items() if k != combinator}, **others[0]}
    kind = schema.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        if len(others) == 1:
            return {**schema, "type": others[0]}
    return schema


def _kind(schema: dict[str, Any]) -> Kind:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return Kind.ENUM
    kind = schema.get("type")
    if kind in ("string", "number", "integer", "boolean"):
        return Kind(kind)
    return Kind.JSON


def fields_of(input_schema: Any) -> list[Field]:
    """The inputs of a tool whose arguments `input_schema` describes (its required ones first)."""
    if not isinstance(input_schema, dict):
        return []
    properties = input_schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = {r for r in input_schema.get("required") or [] if isinstance(r, str)}
    found = []
    for name, raw in properties.items():
        schema = _effective(raw)
        kind = _kind(schema)
        default = schema.get("default")
        found.append(
            Field(
                name=str(name),
                kind=kind,
                required=name in required,
                title=str(schema.get("title") or name),
                description=str(schema.get("description") or ""),
                options=tuple(schema["enum"]) if kind is Kind.ENUM else (),
                default=default,
                text=_text(default),
            )
        )
    return sorted(found, key=lambda f: not f.required)


def _value(kind: Kind, text: str, options: tuple[Any, ...]) -> Any:
    """The argument a field's text stands for; ValueError with the message to show."""
    if kind is Kind.STRING:
        return text
    if kind is Kind.INTEGER:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind is Kind.NUMBER:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if kind is Kind.BOOLEAN:
        if text not in ("true", "false"):
            raise ValueError("must be true or false")
        return text == "true"
    if kind is Kind.ENUM:
        texts = [_text(o) for o in options]
        if text not in texts:
            raise ValueError("must be one of the listed values")
        return options[texts.index(text)]
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("must be JSON") from None


def parse(fields: list[Field], form: Mapping[str, str]) -> tuple[Parsed, list[Field]]:
    """The arguments a submitted form gives, and the fields again showing what was sent.
    A field left empty is left out of the arguments (an error when it is required)."""
    parsed = Parsed()
    shown = []
    for each in fields:
        text = form.get(each.input_name, "")
        shown.append(
            Field(
                each.name,
                each.kind,
                each.required,
                each.title,
                each.description,
                each.options,
                each.default,
                text,
            )
        )
        if text == "" and each.kind is not Kind.STRING:
            if each.required:
                parsed.errors[each.name] = "is required"
            continue
        if text == "" and not each.required:
            continue
        try:
            parsed.arguments[each.name] = _value(each.kind, text, each.options)
        except ValueError as exc:
            parsed.errors[each.name] = str(exc)
    return parsed, shown


def lines(text: str) -> list[str]:
    """The non-empty lines of a textarea, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def header_lines(text: str) -> dict[str, str]:
    """`Name: value` lines as headers; ValueError naming the first line that is not one."""
    headers: dict[str, str] = {}
    for line in lines(text):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{line[:40]!r} is not Name: value")
        headers[name.strip()] = value.strip()
    return headers


def selections(chosen: list[str]) -> list[dict[str, Any]]:
    """Picker values (`server/tool`, or `server/*` for all of its tools) as mcp_configs."""
    tools: dict[str, list[str]] = {}
    for value in chosen:
        server, sep, tool = value.partition("/")
        if sep and server and tool:
            tools.setdefault(server, []).append(tool)
    return [
        {"mcp_client_name": server, "tools_to_execute": ["*"] if "*" in names else sorted(set(names))}
        for server, names in sorted(tools.items())
    ]


def picked(mcp_configs: list[dict[str, Any]]) -> set[str]:
    """The picker values an mcp_configs list stands for (the inverse of `selections`)."""
    return {f"{c['mcp_client_name']}/{tool}" for c in mcp_configs for tool in c.get("tools_to_execute", [])}


def choices(listed: Iterable[tuple[str, str]], chosen: set[str]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """The picker's choices: each server's tools from the catalog (`listed`, as server and
    tool), and those `chosen` that it lacks now (a disabled tool, a server that is down),
    marked False, so that saving the form keeps them. Sorted by server, then tool."""
    by_server: dict[str, dict[str, bool]] = {}
    for server, tool in listed:
        by_server.setdefault(server, {})[tool] = True
    for value in chosen:
        server, sep, tool = value.partition("/")
        if sep and server and tool and tool != "*":
            by_server.setdefault(server, {}).setdefault(tool, False)
        elif sep and server and tool == "*":
            by_server.setdefault(server, {})
    return [(server, sorted(tools.items())) for server, tools in sorted(by_server.items())]


def number_or_text(text: str) -> Any:
    """A number when the text is one, else the text (for the API to name what is wrong)."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def chosen(form: FormData | None, name: str) -> set[str]:
    """The values a form's checkboxes named `name` sent (none on a GET)."""
    return {str(v) for v in form.getlist(name)} if form is not None else set()
