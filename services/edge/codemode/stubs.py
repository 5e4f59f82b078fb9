"""The Python a model reads in Code Mode: one `.pyi` module per server (or per tool), a typed
`async def` per tool from its inputSchema, and a tool's full docs on request.

Pure functions of tool definitions; `meta` serves what they write.
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from services.contracts import registry_pb2

# Names a server module must not take: the sandbox's own modules and Python's words.
RESERVED = frozenset(sys.stdlib_module_names) | frozenset(dir(builtins)) | frozenset(keyword.kwlist)
_NOT_IDENTIFIER = re.compile(r"\W")
# How much of one schema a signature spells out before it says Any.
MAX_TYPE_DEPTH = 3
MAX_LITERALS = 12


class Binding(Enum):
    """Bifrost's code_mode_binding_level: what one stub file holds."""

    SERVER = "server"
    TOOL = "tool"

    @classmethod
    def of(cls, binding: registry_pb2.CodeModeBinding.ValueType) -> Binding:
        return cls.TOOL if binding == registry_pb2.CODE_MODE_BINDING_TOOL else cls.SERVER


def identifier(name: str, reserved: frozenset[str] = frozenset()) -> str:
    """`name` as a Python identifier: other characters become `_`, and a name Python or the
    sandbox already uses gets a trailing `_`."""
    ident = _NOT_IDENTIFIER.sub("_", name) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    while ident in reserved or keyword.iskeyword(ident):
        ident += "_"
    return ident


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool a script may call: where it routes, and its definition."""

    exposed_name: str
    server: str
    name: str
    definition: dict[str, Any]

    @property
    def description(self) -> str:
        description = self.definition.get("description")
        return description.strip() if isinstance(description, str) else ""

    @property
    def input_schema(self) -> dict[str, Any]:
        schema = self.definition.get("inputSchema")
        return schema if isinstance(schema, dict) else {}


@dataclass(frozen=True, slots=True)
class Module:
    """A server as scripts import it: its identifier and its tools by function name."""

    server: str
    ident: str
    functions: dict[str, Tool]


def modules(tools: Iterable[Tool]) -> dict[str, Module]:
    """The modules of `tools`, by identifier: one per server, a function per tool."""
    by_server: dict[str, list[Tool]] = {}
    for tool in tools:
        by_server.setdefault(tool.server, []).append(tool)
    found: dict[str, Module] = {}
    for server in sorted(by_server):
        ident = identifier(server, RESERVED | frozenset(found))
        functions: dict[str, Tool] = {}
        for tool in by_server[server]:
            functions[identifier(tool.name, frozenset(functions))] = tool
        found[ident] = Module(server, ident, functions)
    return found


def python_type(schema: object, depth: int = 0) -> str:
    """The annotation a JSON Schema reads as (Any where it says too little or too much)."""
    if not isinstance(schema, dict) or depth > MAX_TYPE_DEPTH:
        return "Any"
    if "enum" in schema and isinstance(schema["enum"], list) and 0 < len(schema["enum"]) <= MAX_LITERALS:
        values = schema["enum"]
        if all(isinstance(v, str | int | bool) or v is None for v in values):
            return f"Literal[{', '.join(repr(v) for v in values)}]"
    if "const" in schema and isinstance(schema["const"], str | int | bool):
        return f"Literal[{schema['const']!r}]"
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _union(python_type(option, depth + 1) for option in options)
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union(python_type({**schema, "type": k}, depth + 1) for k in kind)
    if kind == "array":
        return f"list[{python_type(schema.get('items'), depth + 1)}]"
    if kind == "object":
        return "dict[str, Any]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}.get(
        kind if isinstance(kind, str) else "", "Any"
    )


def _union(types: Iterable[str]) -> str:
    unique = list(dict.fromkeys(types))
    return "Any" if "Any" in unique else " | ".join(unique)


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    annotation: str
    required: bool
    description: str


def parameters(tool: Tool) -> tuple[list[Parameter], bool]:
    """A tool's keyword parameters, required first; and whether some argument has a name no
    keyword can spell (such a tool also takes `**arguments`)."""
    schema = tool.input_schema
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = {r for r in schema.get("required") or () if isinstance(r, str)}
    found: list[Parameter] = []
    unspellable = False
    for name, sub in properties.items():
        if not name.isidentifier() or keyword.iskeyword(name):
            unspellable = True
            continue
        sub = sub if isinstance(sub, dict) else {}
        description = sub.get("description")
        found.append(
            Parameter(
                name,
                python_type(sub),
                name in required,
                description.strip() if isinstance(description, str) else "",
            )
        )
    found.sort(key=lambda p: not p.required)
    open_ended = schema.get("additionalProperties") not in (None, False)
    return found, unspellable or open_ended


def signature(function: str, tool: Tool) -> str:
    """`async def function(*, a: int, b: str | None = None) -> Any` for a tool."""
    params, rest = parameters(tool)
    spelled = [
        p.name + ": " + (p.annotation if p.required else f"{p.annotation} | None = None") for p in params
    ]
    if rest:
        spelled.append("**arguments: Any")
    listed = ", ".join(["*", *spelled]) if params else ", ".join(spelled)
    return f"async def {function}({listed}) -> Any"


def _first_line(text: str, width: int = 100) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def module_stub(module: Module, only: str | None = None) -> str:
    """The `.pyi` text of a server module (or of one of its functions)."""
    lines = [
        f"# Tools of MCP server {module.server!r}. In executeToolCode: import {module.ident}",
        f"# then `await {module.ident}.<tool>(arg=value)`; use asyncio.gather for parallel calls.",
        f"# Full docs of a tool: getToolDocs(server={module.server!r}, tool=<tool>).",
        "from typing import Any, Literal",
        "",
    ]
    for function, tool in module.functions.items():
        if only is not None and function != only:
            continue
        lines.append(f"{signature(function, tool)}: ...")
        if tool.description:
            lines.append(f'    """{_docstring_safe(_first_line(tool.description))}"""')
    return "\n".join(lines) + "\n"


def _docstring_safe(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def tool_docs(module: Module, function: str) -> str:
    """Everything a script needs to call one tool: signature, description, each argument,
    and what a call returns."""
    tool = module.functions[function]
    params, rest = parameters(tool)
    lines = [
        f"# {module.server}.{tool.name}: call as `await {module.ident}.{function}(...)` "
        f"after `import {module.ident}`.",
        f"{signature(function, tool)}:",
        '    """',
    ]
    lines += [
        f"    {_docstring_safe(line)}" for line in (tool.description or "(no description)").splitlines()
    ]
    if params or rest:
        lines += ["", "    Args:"]
        for param in params:
            needed = "required" if param.required else "optional"
            detail = f" {param.description}" if param.description else ""
            lines.append(f"        {param.name} ({param.annotation}, {needed}):{_docstring_safe(detail)}")
        if rest:
            lines.append("        **arguments: arguments whose names are not identifiers, as a dict.")
    lines += [
        "",
        "    Returns:",
        "        The tool's structuredContent when it has one; else its text (parsed when it is",
        "        JSON; a list when there are several); else its content blocks. A tool error",
        "        raises RuntimeError with the tool's message.",
    ]
    output = tool.definition.get("outputSchema")
    if isinstance(output, dict):
        lines.append(f"        structuredContent matches: {_compact(output)}")
    lines.append('    """')
    return "\n".join(lines) + "\n"


def _compact(schema: Mapping[str, Any], width: int = 2000) -> str:
    text = orjson.dumps(schema).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def file_names(found: Mapping[str, Module], binding: Binding) -> list[str]:
    """The virtual files listToolFiles shows."""
    if binding is Binding.SERVER:
        return [f"servers/{ident}.pyi" for ident in found]
    return [
        f"servers/{ident}/{function}.pyi" for ident, module in found.items() for function in module.functions
    ]


def read_file(found: Mapping[str, Module], binding: Binding, name: str) -> str | None:
    """The text of one virtual file; None when there is no such file."""
    match = re.fullmatch(
        r"servers/([^/]+)\.pyi" if binding is Binding.SERVER else r"servers/([^/]+)/([^/]+)\.pyi", name
    )
    if match is None or match.group(1) not in found:
        return None
    module = found[match.group(1)]
    if binding is Binding.SERVER:
        return module_stub(module)
    function = match.group(2)
    return module_stub(module, function) if function in module.functions else None
