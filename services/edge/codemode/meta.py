"""Code Mode's four meta-tools, in Bifrost's names and arguments: what a client in code mode
lists instead of the tools, and how each is answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.edge.codemode.sandbox import HostCall, RunOutcome, Sandbox
from services.edge.codemode.stubs import Binding, Module, file_names, identifier, read_file, tool_docs

LIST_FILES = "listToolFiles"
READ_FILE = "readToolFile"
TOOL_DOCS = "getToolDocs"
EXECUTE = "executeToolCode"
NAMES = frozenset({LIST_FILES, READ_FILE, TOOL_DOCS, EXECUTE})

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": LIST_FILES,
        "description": "List the Python stub files (.pyi) of the tools you can call from "
        "executeToolCode, one module per MCP server. Read one with readToolFile.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": READ_FILE,
        "description": "Read a stub file listToolFiles shows: each tool's async signature and "
        "summary. startLine and endLine (1-based, inclusive) read part of it.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "fileName": {"type": "string", "description": "e.g. servers/github.pyi"},
                "startLine": {"type": "integer", "minimum": 1},
                "endLine": {"type": "integer", "minimum": 1},
            },
            "required": ["fileName"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": TOOL_DOCS,
        "description": "The full documentation of one tool: every argument and what it returns.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "server": {"type": "string", "description": "The server's name or module."},
                "tool": {"type": "string", "description": "The tool's name or function."},
            },
            "required": ["server", "tool"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": EXECUTE,
        "description": "Run Python (a sandboxed interpreter: no files, network or other imports) "
        "that calls tools as `await <module>.<tool>(arg=value)`; every server's module is "
        "already imported, asyncio.gather runs calls in parallel. The last expression's value "
        "(or a variable named result) and what the code prints come back; an exception comes "
        "back as its traceback.",
        "inputSchema": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source to run."}},
            "required": ["code"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {
                "result": {"description": "The script's value, as JSON."},
                "printed": {"type": "string"},
                "toolCalls": {"type": "integer"},
            },
            "required": ["result", "printed", "toolCalls"],
        },
    },
]
DEFINITIONS_JSON = [orjson.dumps(d) for d in DEFINITIONS]


class ArgumentsError(Exception):
    """A meta-tool called with arguments it cannot use (InvalidParamsError to the client)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A meta-tool's CallToolResult, as JSON, and whether it is a tool error."""

    result_json: bytes
    is_error: bool = False


def _text(text: str, is_error: bool = False, structured: Any = None) -> Answer:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if structured is not None:
        result["structuredContent"] = structured
    return Answer(orjson.dumps(result), is_error)


def _string(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ArgumentsError(f'Invalid params: "{name}" must be a string')
    return value


def _line(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentsError(f'Invalid params: "{name}" must be an integer of at least 1')
    return value


def _module(found: Mapping[str, Module], server: str) -> Module | None:
    if server in found:
        return found[server]
    return next((m for m in found.values() if m.server == server), None)


def _function(module: Module, tool: str) -> str | None:
    if tool in module.functions:
        return tool
    return next((f for f, t in module.functions.items() if t.name == tool), None)


def describe(outcome: RunOutcome, sandbox: Sandbox) -> Answer:
    """What executeToolCode answers for a run: its value and output, its traceback, or the
    limit that stopped it."""
    printed = outcome.printed
    if outcome.limit is not None:
        amount = sandbox.limits.amount(outcome.limit)
        text = f"mcpgw: the script was stopped at its {outcome.limit.value} limit ({amount})"
        return _text(text + (f"\n\nIt printed:\n{printed}" if printed else ""), is_error=True)
    if outcome.error:
        return _text(outcome.error + (f"\n\nIt printed:\n{printed}" if printed else ""), is_error=True)
    value = orjson.loads(orjson.dumps(outcome.value, default=repr))
    shown = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    text = f"{printed}\n{shown}" if printed else shown
    return _text(text, structured={"result": value, "printed": printed, "toolCalls": outcome.tool_calls})


async def answer(
    name: str,
    arguments: Mapping[str, Any],
    found: Mapping[str, Module],
    binding: Binding,
    sandbox: Sandbox,
    call: HostCall,
) -> Answer:
    """One meta-tool's answer over the modules of a view; ArgumentsError for unusable arguments."""
    if name == LIST_FILES:
        files = file_names(found, binding)
        return _text("\n".join(files) if files else "(no tools are available to code)")
    if name == READ_FILE:
        file_name = _string(arguments, "fileName")
        text = read_file(found, binding, file_name)
        if text is None:
            return _text(f"No file {file_name!r}; listToolFiles shows the files there are.", is_error=True)
        lines = text.splitlines()
        start, end = _line(arguments, "startLine") or 1, _line(arguments, "endLine") or len(lines)
        return _text("\n".join(lines[start - 1 : end]))
    if name == TOOL_DOCS:
        server, tool = _string(arguments, "server"), _string(arguments, "tool")
        module = _module(found, server) or _module(found, identifier(server))
        function = None if module is None else _function(module, tool)
        if module is None or function is None:
            return _text(f"No tool {tool!r} on server {server!r}; listToolFiles shows the servers.", True)
        return _text(tool_docs(module, function))
    code = _string(arguments, "code")
    return describe(await sandbox.run(code, found, call), sandbox)


def script_value(result_json: bytes) -> Any:
    """What a tool call's result is to a script: its structuredContent, else its text (JSON
    when it parses; a list of several), else its content blocks. RuntimeError for a tool error."""
    result = orjson.loads(result_json)
    if not isinstance(result, dict):
        return result
    texts = [
        c.get("text", "")
        for c in result.get("content") or ()
        if isinstance(c, dict) and c.get("type") == "text"
    ]
    if result.get("isError"):
        raise RuntimeError("\n".join(texts) or "the tool reported an error")
    if "structuredContent" in result:
        return result["structuredContent"]
    content = result.get("content") or []
    if texts and len(texts) == len(content):
        values = [_parsed(t) for t in texts]
        return values[0] if len(values) == 1 else values
    return content


def _parsed(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
