"""The hostile-input drill (issue 14): generated requests over /mcp, /mcp/{server}, /sse,
/messages and /api of a running gateway; answers counted by status and JSON-RPC code, with
every 5xx and every answer that leaks a traceback, a path or an exception class.

    python -m bench.hostile --base-url http://127.0.0.1:PORT --admin-token T --server NAME \
        [--requests 10000] [--seed 1] [--concurrency 16] [--case N]

Generation: each category is a hypothesis strategy of a small `Case` (sizes, not megabytes).
Why @given + @seed (Phase.generate only, collecting each example): hypothesis's engine is
deterministic for a seed with public API only; `.example()` is not (and is for the REPL),
and drawing with ConjectureData is internal API. Bulk bytes (deep nesting, huge bodies)
are built from the drawn sizes on send. MCP params come from the JSON schemas of the `mcp`
package's pydantic models, walked here (hypothesis-jsonschema fails on current hypothesis),
valid or with one field's type violated. Every request is written as raw bytes on its own
127.0.0.1 connection, so invalid header bytes, truncated and chunked bodies go as generated.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import string
import sys
import time
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import httptools
import mcp.types as mcp_types
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

HANDSHAKE = "2025-11-25"
BATCHING = "2025-03-26"  # the last revision that allows batches
MODERN = "2026-07-28"
MAX_BODY = 4 * 1024 * 1024  # the edge's default MCPGW_MAX_BODY_BYTES
CONNECT_SECONDS = 5.0
ANSWER_SECONDS = 20.0  # a whole answer; past it the request is a timeout
HANG_SECONDS = 1.5  # requests that leave the server waiting (short bodies) end here
STREAM_SECONDS = 0.5  # an event stream is read this long after its headers, then closed
KEEP_BYTES = 1 << 20  # of an answer's body, for classifying it (the rest is read, not kept)
EXAMPLES = 10

Json = Any
T = typing.TypeVar("T")

# --- What a case is ---------------------------------------------------------------------

# Live values (tokens, names) are known only once the gateway is reached, so a case names
# them with markers, resolved when it is put on the wire; `op` forges a variant of one.
LIVE_NAMES = (
    "session",  # a 2025-11-25 session on /mcp
    "session_server",  # a 2025-11-25 session on /mcp/{server}
    "session_batch",  # a 2025-03-26 session on /mcp (batches allowed)
    "legacy",  # the session id of a GET /sse stream
    "legacy_server",  # the session id of a GET /sse/{server} stream
    "admin",  # the admin token
    "server",  # the server's name
    "tool",  # the tool's name on /mcp (prefixed)
    "tool_local",  # the tool's name on /mcp/{server}
    "host",  # 127.0.0.1:PORT
)
OPS = ("flip", "cut", "grow", "swap", "case", "kind")
MARK_RE = re.compile(rb"\xee\x80\x80([a-z_]+)(?:\|([a-z]+)\|(\d+))?\xee\x80\x81")
# Where a category splices bytes into a serialized message (never a live name).
HOLE = "\ue002hole\ue003"


def mark(name: str, op: str = "", arg: int = 0) -> str:
    """The marker of live value `name`, forged by `op` (see `forge`) when given."""
    return f"\ue000{name}|{op}|{arg}\ue001" if op else f"\ue000{name}\ue001"


def bmark(name: str, op: str = "", arg: int = 0) -> bytes:
    return mark(name, op, arg).encode()


@dataclass(frozen=True, slots=True)
class Bulk:
    """prefix + unit * count + middle + closer * close_count + suffix, built when sent."""

    prefix: bytes
    unit: bytes
    count: int
    middle: bytes = b""
    closer: bytes = b""
    close_count: int = 0
    suffix: bytes = b""

    def build(self) -> bytes:
        return b"".join(
            (self.prefix, self.unit * self.count, self.middle, self.closer * self.close_count, self.suffix)
        )

    def size(self) -> int:
        return (
            len(self.prefix)
            + len(self.unit) * self.count
            + len(self.middle)
            + len(self.closer) * self.close_count
            + len(self.suffix)
        )


Body = bytes | Bulk
# length: Content-Length added; chunked: Transfer-Encoding with `chunk`-sized chunks; short:
# Content-Length `chunk` bytes over the body; unterminated: chunked without the last chunk;
# verbatim: the body as is, with no framing header added (the case's headers say it, or not).
Framing = Literal["length", "chunked", "short", "unterminated", "verbatim"]


@dataclass(frozen=True, slots=True)
class Case:
    """One generated request: what `wire` turns into bytes."""

    category: str
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: Body = b""
    framing: Framing = "length"
    chunk: int = 0
    version: bytes = b"HTTP/1.1"
    host: bool = True  # add `Host: 127.0.0.1:PORT` first
    raw: bytes | None = None  # the whole request as is (request-line garbage, other protocols)
    hang_ok: bool = False  # the server may rightly wait for more (a short body): a timeout is fine
    foreign: bool = False  # carries a foreign Host or Origin, so it must not be served (2xx)

    def body_size(self) -> int:
        return self.body.size() if isinstance(self.body, Bulk) else len(self.body)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the admin API, from its OpenAPI document."""

    method: str
    path: str
    body: Json | None  # the request body's schema, refs into the document
    refusable: bool  # its body has fields whose wrong types it must refuse (never servers)


@dataclass(frozen=True, slots=True)
class Surface:
    """What generation knows of the gateway: the server, its tool, the admin API."""

    server: str
    tool_schema: Json
    operations: tuple[Operation, ...]
    openapi: Json


# --- Schemas: valid and type-violating values -------------------------------------------

SCALAR_TYPES = ("null", "boolean", "integer", "number", "string")
ALL_TYPES = (*SCALAR_TYPES, "array", "object")
MAX_SCHEMA_DEPTH = 5

TEXT = st.text(max_size=12)
SCALARS: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUES: st.SearchStrategy[Json] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
BY_TYPE: dict[str, st.SearchStrategy[Json]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(),
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    "string": TEXT,
    "array": st.lists(SCALARS, max_size=3),
    "object": st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
}


def resolve(schema: Json, root: Json) -> Json:
    """`schema` with its `$ref` (a local JSON pointer) followed, and a single allOf opened."""
    for _ in range(32):
        if isinstance(schema, dict) and "$ref" in schema:
            node = root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema = node
        elif isinstance(schema, dict) and len(schema.get("allOf", ())) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    raise ValueError("a $ref chain that does not end")


def json_types(schema: Json, root: Json) -> set[str]:
    """The JSON types a schema admits (all of them when it does not say)."""
    schema = resolve(schema, root)
    if not isinstance(schema, dict):
        return set(ALL_TYPES)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return {type_of(v) for v in values} | ({"number"} & {type_of(v) for v in values})
    if "anyOf" in schema or "oneOf" in schema:
        found: set[str] = set()
        for option in schema.get("anyOf") or schema.get("oneOf") or []:
            found |= json_types(option, root)
        return found
    declared = schema.get("type")
    if declared is None:
        return set(ALL_TYPES)
    found = set(declared if isinstance(declared, list) else [declared])
    return found | {"integer"} if "number" in found else found


def type_of(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def valid(schema: Json, root: Json, depth: int = 0) -> st.SearchStrategy[Json]:
    """Values the schema admits (formats and patterns aside)."""
    schema = resolve(schema, root)
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return st.none() if depth > MAX_SCHEMA_DEPTH else JSON_VALUES
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    options = schema.get("anyOf", schema.get("oneOf"))
    if options:
        return st.one_of([valid(option, root, depth + 1) for option in options])
    declared = schema.get("type")
    if isinstance(declared, list):
        return st.one_of([valid({**schema, "type": t}, root, depth) for t in declared])
    if declared == "object" or (declared is None and "properties" in schema):
        properties: dict[str, Json] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        strategies = {k: valid(v, root, depth + 1) for k, v in properties.items()}
        optional = (
            {}
            if depth >= MAX_SCHEMA_DEPTH - 1
            else {k: s for k, s in strategies.items() if k not in required}
        )
        return st.fixed_dictionaries(
            {k: s for k, s in strategies.items() if k in required}, optional=optional
        )
    if declared == "array":
        items = valid(schema.get("items", {}), root, depth + 1)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", 3), 3)))
    if declared == "string":
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 16), 16)))
    if declared == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if declared == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if declared == "boolean":
        return st.booleans()
    if declared == "null":
        return st.none()
    return JSON_VALUES


def field_paths(schema: Json, root: Json, depth: int = 0) -> list[tuple[tuple[str, ...], Json, bool]]:
    """(path, schema, required) of every property, nested objects included (two levels)."""
    schema = resolve(schema, root)
    if not isinstance(schema, dict):
        return []
    # An optional object (anyOf [object, null]) is walked into as the object.
    options = [resolve(o, root) for o in schema.get("anyOf", ())]
    objects = [o for o in options if isinstance(o, dict) and "properties" in o]
    if objects:
        schema = objects[0]
    found: list[tuple[tuple[str, ...], Json, bool]] = []
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        found.append(((name,), sub, name in required))
        if depth < 2:
            found += [((name, *p), s, r) for p, s, r in field_paths(sub, root, depth + 1)]
    return found


def wrong_type(allowed: set[str], *, coercible: bool) -> st.SearchStrategy[Json] | None:
    """A value of a JSON type the field does not admit; with `coercible` False only values
    that pydantic's lax mode cannot coerce either (containers for scalars and back)."""
    if coercible:
        wrong = [t for t in ALL_TYPES if t not in allowed]
        if "integer" in allowed and "number" not in allowed:
            wrong.append("number")  # a float with a fraction is not an integer
    elif allowed & {"boolean", "integer", "number", "string"}:
        wrong = [t for t in ("array", "object") if t not in allowed]
    else:
        wrong = [t for t in ("string", "integer", "boolean") if t not in allowed]
    wrong = list(dict.fromkeys(t for t in wrong if t != "number" or "number" not in allowed))
    return st.one_of([BY_TYPE[t] for t in wrong]) if wrong else None


def put(target: dict[str, Json], path: Sequence[str], value: Json) -> None:
    for key in path[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            inner = target[key] = {}
        target = inner
    target[path[-1]] = value


def drop(target: dict[str, Json], path: Sequence[str]) -> None:
    # An absent optional parent is made present, or its required field would go unmissed.
    for key in path[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            inner = target[key] = {}
        target = inner
    target.pop(path[-1], None)


def violating(schema: Json, root: Json, *, coercible: bool = True) -> st.SearchStrategy[Json]:
    """Objects the schema admits but for one field: of a wrong type, or required and absent."""
    choices: list[tuple[tuple[str, ...], st.SearchStrategy[Json] | None]] = []
    for path, sub, required in field_paths(schema, root):
        wrong = wrong_type(json_types(sub, root), coercible=coercible)
        if wrong is not None:
            choices.append((path, wrong))
        if required:
            choices.append((path, None))
    base = valid(schema, root)
    if not choices:
        return base

    @st.composite
    def one_wrong(draw: st.DrawFn) -> Json:
        value = draw(base)
        value = value if isinstance(value, dict) else {}
        path, wrong = draw(st.sampled_from(choices))
        if wrong is None:
            drop(value, path)
        else:
            put(value, path, draw(wrong))
        return value

    return one_wrong()


# Strategies are built once per schema: building them anew for every draw costs more than
# drawing. Each entry holds its root, so the root's id() names it for as long as the entry lives.
_BUILT: dict[tuple[str, int, str], tuple[Json, st.SearchStrategy[Json]]] = {}


def built(
    kind: Literal["valid", "violating", "refused"], schema: Json, root: Json
) -> st.SearchStrategy[Json]:
    """valid(), violating() or violating(coercible=False) of `schema`, built once."""
    key = (kind, id(root), json.dumps(schema, sort_keys=True))
    if key not in _BUILT:
        strategy = (
            valid(schema, root) if kind == "valid" else violating(schema, root, coercible=kind != "refused")
        )
        _BUILT[key] = (root, strategy)
    return _BUILT[key][1]


# --- MCP methods, from the protocol's own models -----------------------------------------


def mcp_methods() -> dict[str, Json]:
    """Each client request's method and the JSON schema of its params (mcp.types)."""
    requests = [*typing.get_args(mcp_types.ClientRequest)]
    requests += [mcp_types.GetTaskRequest, mcp_types.GetTaskPayloadRequest, mcp_types.CancelTaskRequest]
    requests += [mcp_types.ListTasksRequest]
    found: dict[str, Json] = {}
    for request in requests:
        method = typing.get_args(request.model_fields["method"].annotation)[0]
        params = request.model_fields["params"].annotation
        model = next(a for a in (*typing.get_args(params), params) if hasattr(a, "model_json_schema"))
        found[method] = model.model_json_schema(by_alias=True)
    return dict(sorted(found.items()))


METHOD_SCHEMAS = mcp_methods()
METHODS = tuple(METHOD_SCHEMAS)

# --- Channels: how an MCP message reaches the gateway ------------------------------------

ACCEPT = (b"accept", b"application/json, text/event-stream")
CONTENT_TYPE = (b"content-type", b"application/json")
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "hostile", "version": "1"},
}
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


@dataclass(frozen=True, slots=True)
class Channel:
    """An endpoint and revision: its target, headers, and the tool's name there."""

    name: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    tool: str
    modern: bool = False


def _session(name: str, version: str) -> tuple[tuple[bytes, bytes], ...]:
    return (
        ACCEPT,
        CONTENT_TYPE,
        (b"mcp-session-id", bmark(name)),
        (b"mcp-protocol-version", version.encode()),
    )


SERVER_PATH = b"/mcp/" + bmark("server")
CHANNELS = (
    Channel("mcp 2025-11-25", b"/mcp", _session("session", HANDSHAKE), mark("tool")),
    Channel("server 2025-11-25", SERVER_PATH, _session("session_server", HANDSHAKE), mark("tool_local")),
    Channel("mcp 2025-03-26", b"/mcp", _session("session_batch", BATCHING), mark("tool")),
    Channel("mcp 2026-07-28", b"/mcp", (ACCEPT, CONTENT_TYPE), mark("tool"), modern=True),
    Channel("server 2026-07-28", SERVER_PATH, (ACCEPT, CONTENT_TYPE), mark("tool_local"), modern=True),
    Channel("legacy", b"/messages?session_id=" + bmark("legacy"), (CONTENT_TYPE,), mark("tool")),
    Channel(
        "legacy server",
        b"/messages?session_id=" + bmark("legacy_server"),
        (CONTENT_TYPE,),
        mark("tool_local"),
    ),
    Channel("no session", b"/mcp", (ACCEPT, CONTENT_TYPE), mark("tool")),
)
SESSION_CHANNELS = CHANNELS[:3]
MODERN_CHANNELS = CHANNELS[3:5]


def dumps(value: Json) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def frame(channel: Channel, message: Json, *, envelope: bool = True) -> tuple[tuple[bytes, bytes], ...]:
    """The headers a message goes with on `channel` (2026-07-28: routing headers, and the
    `_meta` envelope put into the message, unless `envelope` is False)."""
    headers = channel.headers
    if not channel.modern:
        return headers
    headers += ((b"mcp-protocol-version", MODERN.encode()),)
    if not isinstance(message, dict):
        return headers
    params = message.get("params", {})
    if envelope and isinstance(params, dict):
        meta = params.get("_meta")
        message["params"] = {**params, "_meta": {**(meta if isinstance(meta, dict) else {}), **ENVELOPE}}
    method = message.get("method")
    if isinstance(method, str):
        headers += ((b"mcp-method", method.encode()),)
        name = params.get(NAMED.get(method, "")) if isinstance(params, dict) else None
        if isinstance(name, str):
            headers += ((b"mcp-name", name.encode()),)
    return headers


def post(category: str, channel: Channel, message: Json, *, envelope: bool = True) -> Case:
    """A POST of `message` on `channel`."""
    headers = frame(channel, message, envelope=envelope)
    return Case(category, b"POST", channel.target, headers, dumps(message))


# --- Building blocks ---------------------------------------------------------------------

IDS: st.SearchStrategy[Json] = st.integers(0, 2**31) | st.text(
    string.ascii_letters + string.digits, max_size=12
)
ASCII_TOKEN = st.text(string.ascii_letters + string.digits + "-._~+/=", max_size=48)


def request(method: str, params: Json, request_id: Json = 1) -> dict[str, Json]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


@st.composite
def tool_call(draw: st.DrawFn, surface: Surface, channel: Channel) -> dict[str, Json]:
    """A tools/call of the tool, with arguments from its input schema (now and then not)."""
    schema = surface.tool_schema
    arguments = draw(
        built("valid", schema, schema) | built("violating", schema, schema)
        if draw(st.integers(0, 3))
        else JSON_VALUES
    )
    return request("tools/call", {"name": channel.tool, "arguments": arguments}, draw(IDS))


@st.composite
def message(draw: st.DrawFn, surface: Surface, channel: Channel) -> dict[str, Json]:
    """A well-formed request of any MCP method, params valid by the protocol's schema."""
    method = draw(st.sampled_from(METHODS))
    if method == "tools/call" and draw(st.booleans()):
        return draw(tool_call(surface, channel))
    schema = METHOD_SCHEMAS[method]
    return request(method, draw(built("valid", schema, schema)), draw(IDS))


def forged_token(*, live: bool = True) -> st.SearchStrategy[str]:
    """Values that are not a token the gateway issued: random, shaped like one, or a real one
    altered (or, with `live`, a real one of another kind or endpoint); now and then long."""
    return FORGED_LIVE if live else FORGED


def _forged(live: bool) -> st.SearchStrategy[str]:
    kinds = st.sampled_from(["s1", "rs1", "task1", "k1", ""])
    shaped = st.builds("{}.{}.{}".format, kinds, ASCII_TOKEN, ASCII_TOKEN)
    names = st.sampled_from(("session", "session_server", "session_batch", "legacy", "admin"))
    altered = st.builds(mark, names, st.sampled_from(OPS), st.integers(0, 10_000))
    options = [ASCII_TOKEN, shaped, altered, st.text(max_size=24), st.just("")]
    if live:
        options.append(st.sampled_from([mark(n) for n in ("session", "session_server", "legacy", "admin")]))
    token = st.one_of(options)
    # One in sixteen is repeated into a long value, up to a few hundred KB.
    return st.tuples(token, st.integers(0, 15), st.integers(100, 4000)).map(
        lambda t: t[0] * t[2] if t[1] == 0 else t[0]
    )


FORGED, FORGED_LIVE = _forged(False), _forged(True)


def safe_header(text: str) -> bytes:
    """`text` as a header value an HTTP library would send (no CR, LF or NUL)."""
    return re.sub(r"[\r\n\x00]", "", text).encode()


# --- Categories: one strategy each -------------------------------------------------------

# Tables are whitespace-separated where their entries have no spaces, to keep them short.
JUNK_BYTES = [b"", *b'{ } [ ] " : , \\ \\u \x00'.split()]
SYNTAX_TEMPLATES = [
    b'{"jsonrpc":"2.0","id":1e999999,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":-0,"method":"ping","method":"tools/list"}',
    b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"' + b" " * 1000,
]
EMPTY_BODIES = [b"", b" ", b"\r\n", b"\t\n ", *b"[] {} [[]] [{}] null".split()]


@st.composite
def malformed_json(draw: st.DrawFn, surface: Surface) -> Case:
    """Truncated, mangled, syntactically wrong or non-object JSON."""
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    headers = frame(channel, sent)
    text = dumps(sent)
    kind = draw(st.sampled_from(["truncated", "mangled", "syntax", "bytes", "scalar", "empty"]))
    if kind == "truncated":
        body = text[: draw(st.integers(0, len(text) - 1))]
    elif kind == "mangled":
        at = draw(st.integers(0, len(text) - 1))
        body = text[:at] + draw(st.sampled_from(JUNK_BYTES)) + text[at + draw(st.integers(0, 2)) :]
    elif kind == "syntax":
        variants = [
            text.replace(b'"', b"'"),  # single quotes
            text[:-1] + b",}",  # a trailing comma
            b"/* c */" + text,
            b"\xef\xbb\xbf" + text,  # a byte order mark
            text + text,
            text + b"garbage",
            text.replace(b'"2.0"', b"NaN"),
            text.replace(b'"2.0"', b"Infinity"),
            text.replace(b'"jsonrpc"', b"jsonrpc"),  # an unquoted key
        ]
        body = draw(st.sampled_from(variants + SYNTAX_TEMPLATES))
    elif kind == "bytes":
        body = draw(st.binary(max_size=256))
    elif kind == "scalar":
        body = dumps(draw(SCALARS | st.lists(SCALARS, max_size=3)))
    else:
        body = draw(st.sampled_from(EMPTY_BODIES))
    return Case("malformed json", b"POST", channel.target, headers, body)


@st.composite
def deep_nesting(draw: st.DrawFn, surface: Surface) -> Case:
    """Arrays and objects nested 200 to 100,000 deep, anywhere in a message."""
    channel = draw(st.sampled_from(CHANNELS))
    # Around orjson's limits (255 to write, 1024 to read) and far past them.
    depth = draw(st.integers(200, 1100) | st.integers(1000, 100_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"k":', b"}]")]))
    where = draw(st.sampled_from(["argument", "arguments", "params", "meta", "id", "top", "batch"]))
    call = request("tools/call", {"name": channel.tool, "arguments": {"text": HOLE}}, draw(IDS))
    if where == "arguments":
        call["params"]["arguments"] = HOLE
    elif where == "params":
        call["params"] = HOLE
    elif where == "meta":
        call["params"]["_meta"] = {"progressToken": 1, "x": HOLE}
    elif where == "id":
        call["id"] = HOLE
    headers = frame(channel, call)
    prefix, _, suffix = dumps(call).partition(dumps(HOLE))
    if where == "top":
        prefix, suffix = b"", b""
    elif where == "batch":
        prefix, suffix = b"[" + prefix, suffix + b"]"
    closed = depth if draw(st.integers(0, 5)) else depth // 2  # now and then unbalanced
    body = Bulk(prefix, opener, depth, b"0", closer, closed, suffix)
    return Case("deep nesting", b"POST", channel.target, headers, body)


# Each shape of huge body: what repeats, and what opens and closes the run of it.
HUGE_SHAPES = {
    "string": (b'"', b"a", b'"'),
    "method": (b'"', b"t", b'"'),
    "id": (b'"', b"7", b'"'),
    "array": (b"[", b"1,", b"1]"),
    "keys": (b"{", b'"k":0,', b'"k":1}'),
    "garbage": (b"", b"\xfe{", b""),
}


@st.composite
def huge_body(draw: st.DrawFn, surface: Surface) -> Case:
    """Bodies of 64 KiB to 6 MiB (the edge refuses those over its limit, 4 MiB by default),
    with a Content-Length or chunked."""
    channel = draw(st.sampled_from(CHANNELS))
    size = draw(
        st.integers(64 * 1024, 1024 * 1024) | st.integers(MAX_BODY - 1024, MAX_BODY + 2 * 1024 * 1024)
    )
    shape = draw(st.sampled_from(sorted(HUGE_SHAPES)))
    call = request("tools/call", {"name": channel.tool, "arguments": {"text": HOLE}}, 1)
    if shape in ("method", "id"):
        call[shape] = HOLE
    headers = frame(channel, call)
    prefix, _, suffix = dumps(call).partition(dumps(HOLE))
    opening, unit, closing = HUGE_SHAPES[shape]
    if shape == "garbage":
        prefix, suffix = b"", b""
    count = max(1, (size - len(prefix) - len(suffix)) // len(unit))
    body = Bulk(prefix + opening, unit, count, closing, suffix=suffix)
    framing: Framing = "chunked" if draw(st.integers(0, 2)) == 0 else "length"
    chunk = draw(st.integers(4096, 256 * 1024))
    return Case("huge body", b"POST", channel.target, headers, body, framing, chunk)


BROKEN_CHUNKS = [
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"-1\r\n{}\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    b"2;ext=1\r\n{}\r\n0\r\n\r\n",
    b"2\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"2\r\n{}0\r\n\r\n",
    b"2\n{}\n0\n\n",
    b"0\r\n\r\n",
    b"\r\n\r\n",
    b"2\r\n{}\r\n0\r\n\r\nGET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
]
TRANSFER_ENCODINGS = [
    b"chunked",
    b"Chunked",
    b" chunked",
    b"chunked, identity",
    b"gzip, chunked",
    b"identity",
]


@st.composite
def chunked(draw: st.DrawFn, surface: Surface) -> Case:
    """Chunked bodies in chunks of any size (down to one byte), and broken chunked framing."""
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    case = Case("chunked", b"POST", channel.target, frame(channel, sent), dumps(sent), "chunked")
    kind = draw(st.sampled_from(["chunks", "chunks", "broken", "both lengths", "encoding", "unterminated"]))
    if kind == "chunks":
        return dataclasses.replace(case, chunk=draw(st.integers(1, 4096)))
    if kind == "unterminated":
        return dataclasses.replace(case, framing="unterminated", chunk=7, hang_ok=True)
    te = (b"transfer-encoding", draw(st.sampled_from(TRANSFER_ENCODINGS)))
    headers, body = (*case.headers, te), dumps(sent)
    if kind == "broken":
        body = draw(st.sampled_from(BROKEN_CHUNKS))
    elif kind == "both lengths":
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        length = (b"content-length", b"%d" % draw(st.sampled_from([0, 5, len(body) // 2, len(body)])))
        headers = (*case.headers, *((te, length) if draw(st.booleans()) else (length, te)))
    return dataclasses.replace(case, headers=headers, body=body, framing="verbatim", hang_ok=True)


BAD_UTF8 = [
    *b"\xff \xfe\xff \x80 \xc3 \xe2\x82 \xf8\x88\x80\x80\x80".split(),
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong "/" again
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    rb"\ud800",  # valid UTF-8: a lone surrogate escaped in JSON
    rb"\udc00\ud800",
]


def is_invalid_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def invalid_utf8(draw: st.DrawFn, surface: Surface) -> Case:
    """Invalid UTF-8 (and escaped lone surrogates) in a string, a key, a header or the path."""
    channel = draw(st.sampled_from(CHANNELS))
    bad = draw(st.sampled_from(BAD_UTF8) | st.binary(min_size=1, max_size=6).filter(is_invalid_utf8))
    where = draw(st.sampled_from(["method", "tool", "argument", "key", "id", "client", "header", "path"]))
    sent = request("tools/call", {"name": channel.tool, "arguments": {"text": "a" + HOLE}}, 1)
    if where == "method":
        sent["method"] = "tools/" + HOLE
    elif where == "tool":
        sent["params"]["name"] = HOLE
    elif where == "key":
        sent["params"]["arguments"] = {HOLE: "x"}
    elif where == "id":
        sent["id"] = HOLE
    elif where == "client":
        info = {"name": HOLE, "version": "1"}
        sent = request("initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": info})
    headers = tuple((n, v.replace(HOLE.encode(), bad)) for n, v in frame(channel, sent))
    body = dumps(sent).replace(HOLE.encode(), bad)
    target = channel.target
    if where == "header":
        name = draw(st.sampled_from(b"mcp-session-id mcp-method mcp-name authorization origin".split()))
        headers = (*[h for h in headers if h[0] != name], (name, b"x" + bad))
    elif where == "path":
        target = draw(st.sampled_from(b"/mcp/ /messages?session_id= /api/keys/ /sse/".split())) + bad
    return Case("invalid utf-8", b"POST", target, headers, body)


JSONRPC_NEAR = ["2.0 ", "2", "2.00", "1.0", "3.0", "\uff12.0", "2.0\x00", ""]
ID_EDGES = [
    True,
    False,
    1.5,
    -0.0,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    "",
    "x" * 10_000,
    [],
    {},
    [1],
    {"a": 1},
]
METHOD_NEAR = [
    *["tools/call", "TOOLS/CALL", "tools//call", "/tools/call", "rpc.discover", "notifications/initialized"],
    *["$/cancelRequest", "tools/call\x00", "initialize/../tools/call"],
    "tools/call ",
    "",
    "m" * 10_000,
]


@st.composite
def jsonrpc_fields(draw: st.DrawFn, surface: Surface) -> Case:
    """Wrong types and values for jsonrpc, id, method and params; responses, notifications
    and batches the client has no business sending."""
    channel = draw(st.sampled_from(CHANNELS))
    sent: Json = draw(message(surface, channel))
    kind = draw(
        st.sampled_from(["jsonrpc", "id", "method", "params", "missing", "extra", "response", "batch"])
    )
    if kind == "jsonrpc":
        sent["jsonrpc"] = draw(st.sampled_from(JSONRPC_NEAR) | JSON_VALUES.filter(lambda v: v != "2.0"))
    elif kind == "id":
        sent["id"] = draw(st.sampled_from(ID_EDGES) | JSON_VALUES)
    elif kind == "method":
        sent["method"] = draw(st.sampled_from(METHOD_NEAR) | JSON_VALUES)
    elif kind == "params":
        sent["params"] = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    elif kind == "missing":
        for name in draw(st.lists(st.sampled_from(["jsonrpc", "id", "method", "params"]), min_size=1)):
            sent.pop(name, None)
    elif kind == "extra":
        names = st.sampled_from(["result", "error", "x", "_meta", "ID", "Method"])
        sent.update(draw(st.dictionaries(names, JSON_VALUES)))
    elif kind == "response":
        # Ids shaped like those the edge gives the requests it relays (`<edge>-<n>`).
        reply_id = draw(IDS | st.builds("edge-{}-{}".format, st.integers(0, 9), st.integers(0, 99)))
        sent = {
            "jsonrpc": "2.0",
            "id": reply_id,
            draw(st.sampled_from(["result", "error"])): draw(JSON_VALUES),
        }
    else:
        items = st.one_of(
            message(surface, channel), JSON_VALUES, st.just({"jsonrpc": "2.0", "method": "ping"})
        )
        sent = draw(st.lists(items, min_size=1, max_size=20))
    return post("json-rpc fields", channel, sent)


@st.composite
def mcp_params(draw: st.DrawFn, surface: Surface, method: str | None = None) -> Case:
    """An MCP method (any, or `method`) with params valid by its schema, with one field's type
    wrong or a required field missing, or with extra fields; on every channel."""
    method = method or draw(st.sampled_from(METHODS))
    channel = draw(st.sampled_from(CHANNELS))
    schema = METHOD_SCHEMAS[method]
    mode = draw(st.sampled_from(["valid", "violating", "violating", "extra"]))
    params = draw(built("violating" if mode == "violating" else "valid", schema, schema))
    if mode == "extra" and isinstance(params, dict):
        params.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, min_size=1, max_size=3)))
    if method == "tools/call" and isinstance(params, dict) and draw(st.booleans()):
        call = draw(tool_call(surface, channel))
        params = {**params, "name": channel.tool, "arguments": call["params"]["arguments"]}
    sent = request(method, params, draw(IDS))
    return post("mcp params", channel, sent, envelope=draw(st.integers(0, 7)) > 0)


def quote(token: str) -> bytes:
    return token.replace("%", "%25").replace("&", "%26").replace(" ", "%20").replace("#", "%23").encode()


@st.composite
def forged_tokens(draw: st.DrawFn, surface: Surface) -> Case:
    """Mcp-Session-Id, bearer and API keys, 2026-07-28 requestState, legacy session ids,
    task ids and Last-Event-ID values the gateway never issued, or issued for another use."""
    kind = draw(
        st.sampled_from(["session", "bearer", "request state", "legacy", "task", "last event", "key"])
    )
    token = draw(forged_token())
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    case = Case("forged tokens", b"POST", channel.target, frame(channel, sent), dumps(sent))
    if kind == "session":
        channel = draw(st.sampled_from(SESSION_CHANNELS))
        method = draw(st.sampled_from([b"POST", b"GET", b"DELETE"]))
        if method == b"DELETE" and token in (mark("session"), mark("session_server")):
            token = mark("session", "flip", len(token))  # never end the sessions other cases use
        headers = (
            *[h for h in channel.headers if h[0] != b"mcp-session-id"],
            (b"mcp-session-id", token.encode()),
        )
        body = dumps(draw(message(surface, channel))) if method == b"POST" else b""
        return Case("forged tokens", method, channel.target, headers, body)
    if kind in ("bearer", "key"):
        scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", "Bearer  ", "", "Token "]))
        name = (
            b"authorization"
            if kind == "bearer"
            else draw(st.sampled_from([b"x-api-key", b"x-bf-virtual-key"]))
        )
        header = (name, safe_header((scheme if kind == "bearer" else "") + token))
        target = draw(st.sampled_from([channel.target, b"/api/keys", b"/api/servers", b"/sse"]))
        if target != channel.target:
            return dataclasses.replace(case, method=b"GET", target=target, headers=(ACCEPT, header), body=b"")
        return dataclasses.replace(case, headers=(*case.headers, header))
    if kind == "request state":
        channel = draw(st.sampled_from(MODERN_CHANNELS))
        call = draw(tool_call(surface, channel))
        call["params"]["requestState"] = token
        if draw(st.booleans()):
            call["params"]["inputResponses"] = draw(
                st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)
            )
        return post("forged tokens", channel, call)
    if kind == "legacy":
        query = draw(
            st.sampled_from(b"session_id=%s session_id=%s&session_id=x x=%s session_id[]=%s".split())
        )
        return dataclasses.replace(case, target=b"/messages?" + query % quote(token), headers=(CONTENT_TYPE,))
    if kind == "task":
        asked = draw(st.sampled_from(["tasks/get", "tasks/result", "tasks/cancel"]))
        task = draw(st.sampled_from(["task1.", ""])) + token
        return post("forged tokens", channel, request(asked, {"taskId": task}, draw(IDS)))
    channel = draw(st.sampled_from(SESSION_CHANNELS))
    event = draw(st.sampled_from(["{}", "{}.0", "{}.-1", "{}.99999999999999999999", "0.{}"])).format(token)
    headers = (ACCEPT, *channel.headers[2:], (b"last-event-id", safe_header(event)))
    return Case("forged tokens", b"GET", channel.target, headers)


DUPLICATES = [
    (b"mcp-session-id", [bmark("session"), bmark("session", "flip", 3)]),
    (b"mcp-session-id", [bmark("session", "cut", 20), bmark("session")]),
    (b"mcp-protocol-version", [HANDSHAKE.encode(), MODERN.encode()]),
    (b"mcp-protocol-version", [MODERN.encode(), HANDSHAKE.encode()]),
    (b"content-type", [b"application/json", b"text/plain"]),
    (b"accept", [b"text/html", b"application/json, text/event-stream"]),
    (b"mcp-method", [b"tools/call", b"tools/list"]),
    (b"authorization", [b"Bearer " + bmark("admin"), b"Bearer x"]),
]
# Header lines an HTTP library would not write: folded, without a colon, bare LF, NUL, CR.
ODD_LINES = [
    (b"x-a", b"1\r\n folded"),
    (b"x-a", b"1\r\nNoColonHere"),
    (b"x-a", b"1\nx-b: 2"),
    (b"x-a", b"1\x00two"),
    (b"x-a", b"1\rx"),
    (b"x a", b"1"),
    (b"", b"1"),
    (b"x-\xff", b"1"),
    (b"x-a ", b"1"),
    (b"x-a", b"\x7f\x01\x02"),
]
HUGE_HEADERS = b"x-junk mcp-session-id authorization cookie mcp-method accept".split()


@st.composite
def header_flood(draw: st.DrawFn, surface: Surface) -> Case:
    """Thousands of headers, header values up to a megabyte, duplicated MCP headers, and
    header lines an HTTP library would not write."""
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    headers = frame(channel, sent)
    kind = draw(st.sampled_from(["many", "huge", "duplicate", "odd"]))
    if kind == "many":
        stem = draw(st.text(string.ascii_lowercase, min_size=1, max_size=6)).encode()
        headers += tuple((b"x-%s-%d" % (stem, i), b"%d" % i) for i in range(draw(st.integers(50, 4000))))
    elif kind == "huge":
        name = draw(st.sampled_from(HUGE_HEADERS))
        value = b"b" * draw(st.integers(8 * 1024, 1024 * 1024))
        headers = (*[h for h in headers if h[0] != name], (name, value))
    elif kind == "duplicate":
        name, values = draw(st.sampled_from(DUPLICATES))
        headers = (*[h for h in headers if h[0] != name], *[(name, v) for v in values])
    else:
        headers += (draw(st.sampled_from(ODD_LINES)),)
    return Case("header flood", b"POST", channel.target, headers, dumps(sent))


PATH_ROOTS = ["/mcp/", "/mcp", "//mcp/", "/sse/", "/messages/", "/api/", "/", "/MCP/", "/mcp//"]
PATH_PARTS = [
    *["..", "%2e%2e", "%2E%2e", ".", "%2f", "%2F..", "%00", "%5c", "\\", ";x=1", "%", "%zz", "..;"],
    *["mcp", "api", "sse", "messages", "keys", "servers", "openapi.json", "%252e%252e", "%c0%ae%c0%ae"],
    *["", "\x00", "~", mark("server")],
]
PATH_ODD = ["*", "mcp", "\\mcp", "/mcp#frag", "/mcp?", "/mcp\t", "/%2fmcp", "/mcp%00"]
PATH_QUERIES = ["session_id=", "a=", "%00=", "&&&", "x=%zz"]
PATH_HOSTS = ["http://127.0.0.1", "http://evil.example", "https://127.0.0.1:1"]


@st.composite
def path_tricks(draw: st.DrawFn, surface: Surface) -> Case:
    """Dot segments (plain and encoded), double slashes, NULs, long paths and queries,
    absolute-form and odd request targets, on every prefix the edge routes."""
    parts = st.sampled_from(PATH_PARTS) | st.text(string.ascii_letters, max_size=4)
    target = draw(st.sampled_from(PATH_ROOTS)) + "/".join(draw(st.lists(parts, max_size=6)))
    kind = draw(st.sampled_from(["path", "path", "long", "query", "absolute", "odd"]))
    if kind == "long":
        target += "/" + "a" * draw(st.integers(1000, 60_000))
    elif kind == "query":
        target += "?" + draw(st.sampled_from(PATH_QUERIES)) * draw(st.integers(1, 3000))
    elif kind == "absolute":
        target = draw(st.sampled_from(PATH_HOSTS)) + target
    elif kind == "odd":
        target = draw(st.sampled_from(PATH_ODD))
    method = draw(st.sampled_from([b"GET", b"POST", b"DELETE", b"OPTIONS", b"PUT"]))
    channel = draw(st.sampled_from(CHANNELS))
    headers = channel.headers
    if method == b"GET" and draw(st.booleans()):
        # Only reads carry the admin token: a trick that reached a mutating route must not act.
        headers += ((b"authorization", b"Bearer " + bmark("admin")),)
    body = dumps(draw(message(surface, channel))) if method in (b"POST", b"PUT") else b""
    return Case("path tricks", method, target.encode(), headers, body)


FOREIGN_HOSTS = [
    *b"evil.example evil.example:80 127.0.0.1.evil.example 127.0.0.1@evil.example".split(),
    b"evil.example#@127.0.0.1",
    b"evil.example\x00127.0.0.1",
]
ODD_HOSTS = [b"", *b"localhost. [::1] [::1]:1 0x7f.1 2130706433 LOCALHOST 127.0.0.1:99999999 [::1".split()]
FOREIGN_ORIGINS = (
    b"http://evil.example https://127.0.0.1.evil.example http://127.0.0.1@evil.example file://".split()
)
ODD_ORIGINS = [b"", *b"null http://localhost http://[::1] http://127.0.0.1:1 % http://".split()]


@st.composite
def host_origin(draw: st.DrawFn, surface: Surface) -> Case:
    """Missing, foreign, odd and duplicated Host and Origin headers on every endpoint."""
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    case = Case("host and origin", b"POST", channel.target, frame(channel, sent), dumps(sent), host=False)
    where = draw(st.sampled_from(["post", "post", "sse", "api"]))
    if where == "sse":
        target = draw(st.sampled_from([b"/sse", b"/sse/" + bmark("server")]))
        case = dataclasses.replace(case, method=b"GET", target=target, headers=(ACCEPT,), body=b"")
    elif where == "api":
        auth = (b"authorization", b"Bearer " + bmark("admin"))
        target = draw(st.sampled_from([b"/api/keys", b"/api/settings"]))
        case = dataclasses.replace(case, method=b"GET", target=target, headers=(auth,), body=b"")
    local = bmark("host")
    one = [[h] for h in FOREIGN_HOSTS + ODD_HOSTS]
    two = [[local, h] for h in FOREIGN_HOSTS[:2]] + [[h, local] for h in FOREIGN_HOSTS[:2]]
    hosts = draw(st.sampled_from([[], [local], [local, local], *one, *two]))
    origin = b"http://" + local
    pairs = [[origin, FOREIGN_ORIGINS[0]], [FOREIGN_ORIGINS[0], origin]]
    origins = draw(st.sampled_from([[], [origin], *[[o] for o in FOREIGN_ORIGINS + ODD_ORIGINS], *pairs]))
    headers = (*[(b"host", h) for h in hosts], *case.headers, *[(b"origin", o) for o in origins])
    foreign = any(h in FOREIGN_HOSTS for h in hosts) or any(o in FOREIGN_ORIGINS for o in origins)
    return dataclasses.replace(case, headers=headers, foreign=foreign)


RAW_REQUESTS = [
    b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1\r\n",
    b"POST /mcp HTTP/1.1\r\nHost: " + bmark("host") + b"\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),  # a TLS ClientHello's start
    b"GET /mcp HTTP/1.1 extra\r\nHost: " + bmark("host") + b"\r\n\r\n",
    b"GET /mcp\r\n\r\n",  # HTTP/0.9
    b"\x00\x01\x02\x03",
    b"POST /mcp HTTP/1.1\r\nHost: "
    + bmark("host")
    + b"\r\nContent-Length: 2\r\n\r\n{}POST /mcp HTTP/1.1\r\n\r\n",
]
METHODS_ODD = [*b"GET PUT PATCH DELETE OPTIONS HEAD TRACE post FOO".split(), b"M" * 2000]
VERSIONS_ODD = [*b"HTTP/1.0 HTTP/2.0 HTTP/9.9 HTTP/1 http/1.1".split(), b"HTTP/1.1 x"]
LENGTHS_ODD = [b"", *b"-1 abc 1e3 5,5 99999999999999999999 +5 0x10".split(), b" 5"]
MEDIA_ODD = [
    *b"text/plain multipart/form-data application/jsonx */* text/event-stream application/*".split(),
    b"application/json; charset=latin-1",
    b"application/json, text/plain",
    b"text/html;q=0.1, */*;q=0",
    b"",
]


@st.composite
def framing(draw: st.DrawFn, surface: Surface) -> Case:
    """HTTP itself: methods, versions, Content-Length and media type values, short bodies,
    Expect and Upgrade, pipelining, and bytes that are no HTTP request at all."""
    channel = draw(st.sampled_from(CHANNELS))
    sent = draw(message(surface, channel))
    case = Case("framing", b"POST", channel.target, frame(channel, sent), dumps(sent))
    body = dumps(sent)
    kinds = ["method", "version", "length", "short", "media", "expect", "upgrade", "pipelined", "raw"]
    kind = draw(st.sampled_from(kinds))
    if kind == "method":
        return dataclasses.replace(case, method=draw(st.sampled_from(METHODS_ODD)))
    if kind == "version":
        return dataclasses.replace(case, version=draw(st.sampled_from(VERSIONS_ODD)))
    if kind == "length":
        length = (b"content-length", draw(st.sampled_from(LENGTHS_ODD)))
        return dataclasses.replace(
            case, headers=(*case.headers, length), body=body[:5], framing="verbatim", hang_ok=True
        )
    if kind == "short":
        return dataclasses.replace(case, framing="short", chunk=draw(st.integers(1, 100_000)), hang_ok=True)
    if kind == "media":
        name = draw(st.sampled_from([b"content-type", b"accept"]))
        media = (name, draw(st.sampled_from(MEDIA_ODD)))
        return dataclasses.replace(case, headers=(*[h for h in case.headers if h[0] != name], media))
    if kind == "expect":
        return dataclasses.replace(case, headers=(*case.headers, (b"expect", b"100-continue")))
    if kind == "upgrade":
        upgrade = (b"upgrade", draw(st.sampled_from([b"websocket", b"h2c", b"foo"])))
        return dataclasses.replace(case, headers=(*case.headers, (b"connection", b"upgrade"), upgrade))
    if kind == "pipelined":
        # A body of two bytes, then the message as the start of a second request.
        headers = (*case.headers, (b"content-length", b"2"))
        return dataclasses.replace(case, headers=headers, body=b"{}" + body, framing="verbatim")
    return dataclasses.replace(case, raw=draw(st.sampled_from(RAW_REQUESTS)), hang_ok=True)


API_JUNK = [*["..", "%2e%2e", "%00", "%zz", "x%2fy"], "a" * 300]
API_QUERIES = ["a=1", "limit=-1", "x=%00", "&&=", "q=" + "a" * 5000]
API_MALFORMED = [b"{", b'{"a":', b"\xff\xfe", b"{'a': 1}", b"[" * 5000]
API_MEDIA = [b"application/json", b"text/plain", b"application/x-www-form-urlencoded"]


@st.composite
def admin_api(draw: st.DrawFn, surface: Surface) -> Case:
    """Every admin route with odd path parameters and queries, forged or missing tokens, and
    bodies of the wrong shape; the real token goes only with reads and with bodies that cannot
    be valid, so the drill never changes what the gateway serves."""
    operation = draw(st.sampled_from(surface.operations))
    parts = []
    for part in operation.path.split("/"):
        if part.startswith("{"):
            junk = st.sampled_from(API_JUNK) | st.text(string.ascii_letters + "-_", min_size=1, max_size=20)
            part = "zz-" + draw(junk)  # never the name of something that exists
        parts.append(part)
    target = "/".join(parts)
    if draw(st.integers(0, 3)) == 0:
        target += "?" + draw(st.sampled_from(API_QUERIES))
    schema = operation.body
    body_kind = "none"
    if operation.method != "GET" and schema is not None:
        body_kind = draw(st.sampled_from(["violating", "violating", "array", "malformed", "valid"]))
    auth = draw(st.sampled_from(["valid", "valid", "none", "forged", "forged", "basic", "x-api-key"]))
    cannot_be_valid = operation.refusable and body_kind in ("violating", "malformed")
    if auth == "valid" and operation.method != "GET" and not cannot_be_valid:
        auth = "forged"  # the real token never goes with a request that could change something
    token = draw(forged_token(live=False))
    headers: tuple[tuple[bytes, bytes], ...] = {
        "valid": ((b"authorization", b"Bearer " + bmark("admin")),),
        "none": (),
        "forged": ((b"authorization", safe_header("Bearer " + token)),),
        "basic": ((b"authorization", b"Basic " + bmark("admin")),),
        "x-api-key": ((b"x-api-key", bmark("admin")),),
    }[auth]
    body = b""
    if body_kind == "violating":
        body = dumps(draw(built("refused", schema, surface.openapi)))
    elif body_kind == "array":
        body = dumps(draw(st.lists(JSON_VALUES, max_size=3)))
    elif body_kind == "malformed":
        body = draw(st.sampled_from(API_MALFORMED))
    elif body_kind == "valid":
        body = dumps(draw(built("valid", schema, surface.openapi)))
    if body_kind != "none":
        headers += ((b"content-type", draw(st.sampled_from(API_MEDIA))),)
    return Case("admin api", operation.method.encode(), target.encode(), headers, body)


# The share of each category in a run, in percent.
CATEGORIES: dict[str, tuple[int, Callable[[Surface], st.SearchStrategy[Case]]]] = {
    "malformed json": (9, malformed_json),
    "deep nesting": (7, deep_nesting),
    "huge body": (2, huge_body),
    "chunked": (6, chunked),
    "invalid utf-8": (8, invalid_utf8),
    "json-rpc fields": (11, jsonrpc_fields),
    "mcp params": (20, mcp_params),
    "forged tokens": (10, forged_tokens),
    "header flood": (5, header_flood),
    "path tricks": (7, path_tricks),
    "host and origin": (5, host_origin),
    "framing": (4, framing),
    "admin api": (6, admin_api),
}


# --- Generation --------------------------------------------------------------------------


def quotas(requests: int) -> dict[str, int]:
    """How many cases of each category `requests` holds (largest remainders)."""
    total = sum(weight for weight, _ in CATEGORIES.values())
    exact = {name: requests * weight / total for name, (weight, _) in CATEGORIES.items()}
    counts = {name: math.floor(share) for name, share in exact.items()}
    short = requests - sum(counts.values())
    for name in sorted(exact, key=lambda n: (counts[n] - exact[n], n))[:short]:
        counts[name] += 1
    return counts


def sub_seed(*parts: object) -> int:
    """An integer seed from parts (hash() of strings changes between processes)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def draw_many(strategy: st.SearchStrategy[T], count: int, seed: int) -> list[T]:
    """`count` values drawn by hypothesis's engine from `strategy`, the same ones for a seed."""
    cases: list[T] = []
    for attempt in range(32):
        if len(cases) >= count:
            break

        # One run generates up to max_examples distinct cases; a small space may give fewer,
        # so a further run with the next seed tops it up.
        @hypothesis_seed(sub_seed(seed, attempt))
        @settings(
            max_examples=count - len(cases),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        @given(strategy)
        def collect(case: T) -> None:
            if len(cases) < count:
                cases.append(case)

        collect()
    if len(cases) < count:
        raise RuntimeError(f"generated {len(cases)} cases of {count}")
    return cases


def strata(name: str, surface: Surface) -> list[st.SearchStrategy[Case]]:
    """A category's strategies, drawn in equal shares: one per MCP method for mcp params, so
    every method gets its share however hypothesis's engine favours some values."""
    if name == "mcp params":
        return [mcp_params(surface, method) for method in METHODS]
    return [CATEGORIES[name][1](surface)]


def generate(surface: Surface, requests: int, seed: int) -> list[Case]:
    """`requests` cases over every category, interleaved; the same ones for a seed and surface."""
    cases: list[Case] = []
    for name, count in quotas(requests).items():
        parts = strata(name, surface)
        for index, strategy in enumerate(parts):
            share = count // len(parts) + (index < count % len(parts))
            if share:
                cases += draw_many(strategy, share, sub_seed(seed, name, index))
    random.Random(seed).shuffle(cases)  # noqa: S311 (a reproducible order, not a secret)
    return cases


# --- The wire ----------------------------------------------------------------------------


def forge(value: str, op: str, arg: int) -> str:
    """A variant of a live token that is never the token itself."""
    at = arg % max(len(value), 1)
    if op == "flip":
        forged = value[:at] + ("B" if value[at : at + 1] == "A" else "A") + value[at + 1 :]
    elif op == "cut":
        forged = value[:at]
    elif op == "grow":
        forged = value + "A" * (arg % 64 + 1)
    elif op == "swap":
        forged = ".".join(reversed(value.split(".")))
    elif op == "kind":
        # The same token presented as another kind (a session id as a requestState, ...).
        kind, dot, rest = value.partition(".")
        forged = ("rs1" if kind == "s1" else "s1") + dot + rest
    else:
        forged = value.swapcase()
    return forged if forged != value else value + "x"


@dataclass
class Live:
    """The live values markers stand for (the legacy session ids change if a stream reopens)."""

    values: dict[str, str]

    def resolve(self, data: bytes) -> bytes:
        if b"\xee\x80\x80" not in data:
            return data
        return MARK_RE.sub(self._value, data)

    def _value(self, found: re.Match[bytes]) -> bytes:
        value = self.values[found[1].decode()]
        if found[2]:
            value = forge(value, found[2].decode(), int(found[3]))
        return value.encode()


def chunks(body: bytes, size: int, *, terminated: bool) -> bytes:
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(pieces) + (b"0\r\n\r\n" if terminated else b"")


def wire(case: Case, live: Live) -> bytes:
    """The bytes of `case` on the wire, its markers resolved and its framing applied."""
    if case.raw is not None:
        return live.resolve(case.raw)
    if isinstance(case.body, Bulk):
        bulk = dataclasses.replace(
            case.body, prefix=live.resolve(case.body.prefix), suffix=live.resolve(case.body.suffix)
        )
        body = bulk.build()
    else:
        body = live.resolve(case.body)
    lines = [b"%s %s %s" % (case.method, live.resolve(case.target), case.version)]
    if case.host:
        lines.append(b"host: " + live.values["host"].encode())
    lines += [name + b": " + live.resolve(value) for name, value in case.headers]
    if case.framing in ("chunked", "unterminated"):
        lines.append(b"transfer-encoding: chunked")
        body = chunks(body, case.chunk or max(len(body), 1), terminated=case.framing == "chunked")
    elif case.framing == "short":
        lines.append(b"content-length: %d" % (len(body) + case.chunk))
    elif case.framing == "length" and (body or case.method in (b"POST", b"PUT", b"PATCH")):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Answer:
    """What came back: the status (None when no answer), headers and the first MB of body."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0
    timed_out: bool = False
    error: str = ""

    def header(self, name: bytes) -> bytes:
        return next((v for n, v in self.headers if n.lower() == name), b"")


class _Parsed:
    """httptools callbacks filling an Answer; 1xx answers are skipped."""

    def __init__(self, answer: Answer, head: bool) -> None:
        self.answer = answer
        self.head = head
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.headers_at: float | None = None
        self.informational = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.informational = status < 200
        if self.informational:
            self.answer.headers.clear()
            return
        self.answer.status = status
        self.headers_at = time.monotonic()
        self.complete = self.head

    def on_body(self, data: bytes) -> None:
        self.answer.size += len(data)
        room = KEEP_BYTES - len(self.answer.body)
        if room > 0:
            self.answer.body += data[:room]

    def on_message_complete(self) -> None:
        if not self.informational:
            self.complete = True

    def streaming(self) -> bool:
        return self.headers_at is not None and b"text/event-stream" in self.answer.header(b"content-type")


async def exchange(address: tuple[str, int], data: bytes, *, head: bool, seconds: float) -> Answer:
    """Send `data` on a new connection and read the answer (an event stream for STREAM_SECONDS);
    writing and reading overlap, so an answer sent before the body was read is not lost."""
    answer = Answer()
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            reader, writer = await asyncio.open_connection(*address)
    except (OSError, TimeoutError) as exc:
        answer.error = f"connect: {type(exc).__name__}"
        return answer

    async def send() -> None:
        # The server may refuse and close before reading everything (413): not an error here.
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()

    sending = asyncio.ensure_future(send())
    parsed = _Parsed(answer, head)
    end = time.monotonic() + seconds
    try:
        while not parsed.complete:
            limit = end if not parsed.streaming() else min(end, (parsed.headers_at or 0) + STREAM_SECONDS)
            if time.monotonic() >= limit:
                answer.timed_out = not parsed.streaming()
                break
            try:
                async with asyncio.timeout(limit - time.monotonic()):
                    received = await reader.read(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                answer.error = type(exc).__name__
                break
            if not received:
                # A body that runs to the connection's end is complete there.
                parsed.complete = parsed.headers_at is not None
                answer.error = "" if parsed.complete else "closed without an answer"
                break
            try:
                parsed.parser.feed_data(received)
            except httptools.HttpParserError as exc:
                answer.error = f"unparsable answer: {exc}"
                break
    finally:
        sending.cancel()
        writer.transport.abort()
    return answer


# --- Classifying answers -----------------------------------------------------------------

EXCEPTION_NAMES = sorted(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException) and name.endswith(("Error", "Exception"))
)
# Every alternative starts with a literal or is bounded: answers can be a megabyte of one
# word (an echo), where an unbounded `[\w/]*` prefix would backtrack quadratically.
LEAK = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"\n]{1,300}", line \d+'
    r"|(?:site|dist)-packages/[\w./-]{0,100}"
    r"|/lib/python3\.\d+/[\w./-]{0,100}"
    # The project's code; not any path under its root: a stdio server's configured command is
    # one, and the admin API rightly shows it.
    r"|\bservices/[\w/]{1,80}\.py\b"
    r"|\b(?:" + "|".join(EXCEPTION_NAMES) + r")\b"
    # Other classes by their shape: JSONDecodeError, ValidationError, AioRpcError, ...
    r"|\b[A-Z][A-Za-z0-9]{0,60}(?:Error|Exception)\b"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # "200", ..., "timeout", "no answer"
    codes: tuple[int, ...]  # JSON-RPC error codes in the answer
    leak: str  # what leaked, or ""


def error_codes(value: Json) -> list[int]:
    if isinstance(value, list):
        return [code for item in value for code in error_codes(item)]
    if isinstance(value, dict) and "jsonrpc" in value and isinstance(value.get("error"), dict):
        code = value["error"].get("code")
        return [code] if isinstance(code, int) and not isinstance(code, bool) else []
    return []


def messages_in(text: str, stream: bool) -> list[Json]:
    """The JSON values of a JSON answer, or of an event stream's data lines."""
    documents = (
        [line[5:].strip() for line in text.splitlines() if line.startswith("data:")] if stream else [text]
    )
    found = []
    for document in documents:
        with contextlib.suppress(ValueError, RecursionError):
            found.append(json.loads(document))
    return found


def find_leak(text: str, sent: bytes) -> str:
    """The first traceback, path or exception name in `text` that is not an echo of `sent`."""
    for found in LEAK.finditer(text):
        if found[0].encode() not in sent:
            return found[0][:160]
    return ""


def classify(answer: Answer, sent: bytes) -> Verdict:
    """Status, JSON-RPC error codes and any leak of one answer."""
    if answer.status is None:
        return Verdict("timeout" if answer.timed_out else "no answer", (), "")
    text = answer.body.decode("utf-8", "replace")
    head = "\n".join(f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in answer.headers)
    stream = b"text/event-stream" in answer.header(b"content-type")
    codes = tuple(code for value in messages_in(text, stream) for code in error_codes(value))
    return Verdict(str(answer.status), codes, find_leak(head + "\n" + text, sent))


# --- The drill ---------------------------------------------------------------------------

INTERNAL_ERROR = -32603
SERVED = {200, 201, 202, 204}
# Findings by rank: the worst first in `examples`.
RANKS = {"5xx": 0, "leak": 1, "internal error": 2, "hang": 3, "foreign served": 4, "oversize served": 5}


def preview(data: bytes, limit: int = 240) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit - 40]!r}…{data[-40:]!r} ({len(data):,} bytes)"


@dataclass
class Tally:
    """Every answer counted; the worst findings kept with what caused them."""

    max_body: int = MAX_BODY
    requests: int = 0
    skipped: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    by_category: dict[str, Counter[str]] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    findings_by_category: dict[str, Counter[str]] = field(default_factory=dict)
    timeouts: int = 0
    no_answer: int = 0
    stream_events: int = 0
    findings: list[tuple[int, int, str]] = field(default_factory=list)
    _shown: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, index: int, case: Case, sent: bytes, answer: Answer, verdict: Verdict) -> None:
        self.requests += 1
        self.by_status[verdict.status] += 1
        self.by_category.setdefault(case.category, Counter())[verdict.status] += 1
        self.by_code.update(str(code) for code in verdict.codes)
        self.timeouts += verdict.status == "timeout"
        self.no_answer += verdict.status == "no answer"
        status = answer.status or 0
        found = []
        if status >= 500:
            found.append("5xx")
        if verdict.leak:
            found.append("leak")
        if INTERNAL_ERROR in verdict.codes:
            found.append("internal error")
        if answer.timed_out and not case.hang_ok:
            found.append("hang")
        if case.foreign and status in SERVED and not verdict.codes:
            found.append("foreign served")
        if case.body_size() > self.max_body and status in (*SERVED, 422):
            found.append("oversize served")
        for kind in found:
            self.kinds[kind] += 1
            self._keep(kind, case.category, index, self._describe(kind, index, case, sent, answer, verdict))

    def add_event(self, text: str) -> None:
        """An event of a legacy stream: the answers to /messages POSTs arrive there."""
        self.stream_events += 1
        codes = [code for value in messages_in(text, True) for code in error_codes(value)]
        self.by_code.update(str(code) for code in codes)
        leak = find_leak(text, b"")
        for kind in ["leak"] * bool(leak) + ["internal error"] * (INTERNAL_ERROR in codes):
            self.kinds[kind] += 1
            self._keep(kind, "legacy stream", -1, f"{kind} (on a legacy /sse stream): event {text[:300]!r}")

    def _keep(self, kind: str, category: str, index: int, text: str) -> None:
        self.findings_by_category.setdefault(category, Counter())[kind] += 1
        # At most two findings of a kind per category, so one defect does not fill the list.
        if self._shown[kind, category] < 2:
            self._shown[kind, category] += 1
            self.findings.append((RANKS[kind], index, text))

    @staticmethod
    def _describe(kind: str, index: int, case: Case, sent: bytes, answer: Answer, verdict: Verdict) -> str:
        what = verdict.leak or answer.body[:200].decode("utf-8", "replace") or answer.error
        codes = "".join(f" {code}" for code in verdict.codes)
        return (
            f"{kind} ({case.category}, case {index}): answered {verdict.status}{codes}: {what!r}; "
            f"sent {preview(sent)}"
        )

    def result(self) -> dict[str, Any]:
        examples = [text for _, _, text in sorted(self.findings)[:EXAMPLES]]
        return {
            "requests": self.requests,
            "skipped": self.skipped,
            "by_status": dict(sorted(self.by_status.items())),
            "by_code": dict(sorted(self.by_code.items())),
            "5xx": self.kinds["5xx"],
            "leaks": self.kinds["leak"],
            "internal_errors": self.kinds["internal error"],
            "timeouts": self.timeouts,
            "hangs": self.kinds["hang"],
            "no_answer": self.no_answer,
            "foreign_served": self.kinds["foreign served"],
            "oversize_served": self.kinds["oversize served"],
            "legacy_stream_events": self.stream_events,
            "by_category": {c: dict(sorted(n.items())) for c, n in sorted(self.by_category.items())},
            "findings_by_category": {c: dict(n) for c, n in sorted(self.findings_by_category.items())},
            "examples": examples,
        }


# --- Reaching the gateway ----------------------------------------------------------------

# Tools the drill must not call: they sleep, wait, end the server or count slowly.
UNSAFE_TOOL = re.compile(r"sleep|wait|crash|exit|kill|count|fail|delete|remove|write|stderr", re.I)
READ_ONLY_ROUTES = frozenset({("post", "/api/servers"), ("put", "/api/servers/{name}")})


class Gateway:
    """Setup and teardown requests (not counted): sessions, names, the OpenAPI document."""

    def __init__(self, http: aiohttp.ClientSession, base: str, admin_token: str | None) -> None:
        self.http, self.base, self.admin_token = http, base, admin_token

    async def rpc(
        self, path: str, method: str, params: Json, session: str = "", version: str = HANDSHAKE
    ) -> tuple[Json, str]:
        headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": version}
        if session:
            headers["mcp-session-id"] = session
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with self.http.post(self.base + path, json=body, headers=headers) as response:
            response.raise_for_status()
            answer = await response.json(content_type=None)
            return answer, response.headers.get("mcp-session-id", "")

    async def initialize(self, path: str, version: str) -> str:
        hello = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "hostile", "version": "1"},
        }
        _, session = await self.rpc(path, "initialize", hello, version=version)
        headers = {
            "mcp-session-id": session,
            "mcp-protocol-version": version,
            "accept": "application/json, text/event-stream",
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.http.post(self.base + path, json=note, headers=headers) as response:
            response.raise_for_status()
        return session

    async def tools(self, path: str, session: str) -> list[Json]:
        answer, _ = await self.rpc(path, "tools/list", {}, session)
        return list(answer["result"]["tools"])

    async def openapi(self) -> Json:
        headers = {"authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        async with self.http.get(self.base + "/api/openapi.json", headers=headers) as response:
            response.raise_for_status()
            return await response.json()

    async def end(self, path: str, session: str, version: str) -> None:
        headers = {"mcp-session-id": session, "mcp-protocol-version": version}
        with contextlib.suppress(aiohttp.ClientError):
            async with self.http.delete(self.base + path, headers=headers):
                pass


def pick_tool(tools: list[Json], wanted: str | None) -> Json:
    """The tool to call: `wanted`, else one named echo, else the first safe one by name."""
    by_name = {t["name"]: t for t in tools}
    if wanted is not None:
        return by_name[wanted]
    if "echo" in by_name:
        return by_name["echo"]
    safe = sorted(n for n in by_name if not UNSAFE_TOOL.search(n))
    if not safe:
        raise RuntimeError(f"no tool the drill may call among {sorted(by_name)}")
    return by_name[safe[0]]


def operations(openapi: Json) -> tuple[Operation, ...]:
    """The admin API's routes; bodies that could add or replace a server are never valid ones."""
    found = []
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            refusable = (
                schema is not None
                and (method, path) not in READ_ONLY_ROUTES
                and json_types(schema, openapi) == {"object"}
                and any(
                    wrong_type(json_types(sub, openapi), coercible=False) is not None
                    for _, sub, _ in field_paths(schema, openapi)
                )
            )
            found.append(Operation(method.upper(), path, schema, refusable))
    return tuple(found)


class LegacyStream:
    """A GET /sse stream held through the run: its session id for /messages cases, and every
    event it delivers (the answers to those cases) counted and checked for leaks."""

    def __init__(self, http: aiohttp.ClientSession, url: str, live: Live, key: str, tally: Tally) -> None:
        self.http, self.url, self.live, self.key, self.tally = http, url, live, key, tally
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self._hold())
        try:
            async with asyncio.timeout(10):
                await self.ready.wait()
        except TimeoutError:
            # No stream: the cases for it still go, and are refused as for no session.
            self.live.values.setdefault(self.key, "no-stream")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self.task

    async def _hold(self) -> None:
        # The edge may end a stream (a hostile message can close its session): open another.
        for _ in range(20):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
                async with self.http.get(
                    self.url, headers={"accept": "text/event-stream"}, timeout=timeout
                ) as response:
                    if response.status == 200:
                        await self._read(response)
            await asyncio.sleep(0.2)

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        pending = b""
        async for data in response.content.iter_any():
            pending = (pending + data).replace(b"\r\n", b"\n")
            *events, pending = pending.split(b"\n\n")
            for event in events:
                self._event(event.decode("utf-8", "replace"))
            pending = pending[:KEEP_BYTES]  # an event's start is enough to classify it

    def _event(self, text: str) -> None:
        lines = text.splitlines()
        if "event: endpoint" in lines:
            endpoint = next(line[5:].strip() for line in lines if line.startswith("data:"))
            self.live.values[self.key] = endpoint.partition("session_id=")[2]
            self.ready.set()
        elif any(line.startswith("data:") for line in lines):
            self.tally.add_event(text)


def log_size(log: Path | None) -> int:
    return log.stat().st_size if log is not None and log.exists() else 0


def logged_errors(log: Path, offset: int) -> tuple[int, list[str]]:
    """Tracebacks a gateway log got after `offset`, and the distinct exceptions they end in."""
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read(64 * 1024 * 1024).decode("utf-8", "replace")
    exceptions: list[str] = []
    count = 0
    for found in re.finditer(r"Traceback \(most recent call last\):\n((?:[ \t].*\n)*)(.*)", text):
        count += 1
        if found[2] not in exceptions and len(exceptions) < EXAMPLES:
            exceptions.append(found[2][:200])
    return count, exceptions


# The sessions cases use: their live name, endpoint and revision.
SESSIONS = {
    "session": ("/mcp", HANDSHAKE),
    "session_server": ("/mcp/{server}", HANDSHAKE),
    "session_batch": ("/mcp", BATCHING),
}


async def prepare(gateway: Gateway, server: str, tool: str | None, port: int) -> tuple[Surface, Live]:
    """Sessions on every endpoint, the tool to call and the admin API's routes: what cases
    are generated from, and the live values their markers stand for."""
    values = {
        name: await gateway.initialize(path.format(server=server), version)
        for name, (path, version) in SESSIONS.items()
    }
    chosen = pick_tool(await gateway.tools(f"/mcp/{server}", values["session_server"]), tool)
    exposed = {t["name"] for t in await gateway.tools("/mcp", values["session"])}
    # Its name on /mcp, with either separator (a shortened name is not looked for).
    names = [f"{server}{separator}{chosen['name']}" for separator in "_-"]
    prefixed = next((name for name in names if name in exposed), names[0])
    openapi = await gateway.openapi()
    values |= {
        "admin": gateway.admin_token or "not-the-admin-token",
        "server": server,
        "tool": prefixed,
        "tool_local": chosen["name"],
        "host": f"127.0.0.1:{port}",
    }
    surface = Surface(server, chosen.get("inputSchema", {}), operations(openapi), openapi)
    return surface, Live(values)


async def run_async(
    base_url: str,
    *,
    admin_token: str | None,
    server: str,
    requests: int = 10_000,
    seed: int = 1,
    concurrency: int = 16,
    tool: str | None = None,
    log: Path | None = None,
    max_seconds: float = 900.0,
    max_body: int = MAX_BODY,
    answer_seconds: float = ANSWER_SECONDS,
    only: int | None = None,
) -> dict[str, Any]:
    """The drill against the gateway at `base_url` (127.0.0.1 only); see `run`."""
    address = urlsplit(base_url)
    port = address.port
    if address.hostname not in ("127.0.0.1", "localhost") or port is None:
        raise ValueError(f"the drill sends hostile input to 127.0.0.1:PORT only, not {base_url}")
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    log_offset = log_size(log)
    tally = Tally(max_body=max_body)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        gateway = Gateway(http, base, admin_token)
        try:
            surface, live = await prepare(gateway, server, tool, port)
        except (aiohttp.ClientError, KeyError, ValueError, TimeoutError) as exc:
            raise RuntimeError(
                f"could not prepare the drill against {base}: {type(exc).__name__}: {exc}"
            ) from exc
        cases = generate(surface, requests, seed)
        numbered = list(enumerate(cases)) if only is None else [(only, cases[only])]
        streams = [
            LegacyStream(http, f"{base}/sse", live, "legacy", tally),
            LegacyStream(http, f"{base}/sse/{server}", live, "legacy_server", tally),
        ]
        for stream in streams:
            await stream.start()
        pending = iter(numbered)
        deadline = started + max_seconds
        answers: list[tuple[bytes, Answer]] = []

        async def worker() -> None:
            # The workers share one iterator: each takes the next case when it is free.
            for index, case in pending:
                if time.monotonic() > deadline:
                    tally.skipped += 1
                    continue
                data = wire(case, live)
                seconds = HANG_SECONDS if case.hang_ok else answer_seconds
                answer = await exchange(
                    ("127.0.0.1", port), data, head=case.method == b"HEAD", seconds=seconds
                )
                tally.add(index, case, data, answer, classify(answer, data))
                if only is not None:
                    answers.append((data, answer))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        await asyncio.sleep(0.5)  # the legacy streams' last answers
        for stream in streams:
            await stream.stop()
        for name, (path, version) in SESSIONS.items():
            await gateway.end(path.format(server=server), live.values[name], version)
    result = tally.result()
    result["seed"] = seed
    result["seconds"] = round(time.monotonic() - started, 1)
    result["reproduce"] = (
        f"python -m bench.hostile --base-url URL --admin-token TOKEN --server {server} "
        f"--requests {requests} --seed {seed} --case N   (N: the case number of an example)"
    )
    if log is not None and log_size(log):
        result["logged_tracebacks"], result["logged_exceptions"] = logged_errors(log, log_offset)
    for data, answer in answers:
        result["case"] = {
            "sent": preview(data, 2000),
            "status": answer.status,
            "error": answer.error,
            "timed_out": answer.timed_out,
            "headers": [f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in answer.headers],
            "body": answer.body[:4000].decode("utf-8", "replace"),
        }
    return result


def run(
    base_url: str,
    *,
    admin_token: str | None,
    server: str,
    requests: int = 10_000,
    seed: int = 1,
    concurrency: int = 16,
    tool: str | None = None,
    log: Path | None = None,
    max_seconds: float = 900.0,
    max_body: int = MAX_BODY,
    answer_seconds: float = ANSWER_SECONDS,
) -> dict[str, Any]:
    """Send `requests` generated hostile requests (`concurrency` at a time) to the gateway at
    `base_url`, whose `server` is connected; returns the counts (see `Tally.result`)."""
    return asyncio.run(
        run_async(
            base_url,
            admin_token=admin_token,
            server=server,
            requests=requests,
            seed=seed,
            concurrency=concurrency,
            tool=tool,
            log=log,
            max_seconds=max_seconds,
            max_body=max_body,
            answer_seconds=answer_seconds,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the gateway's edge, http://127.0.0.1:PORT")
    parser.add_argument("--admin-token", default=None, help="the admin token (default: $MCPGW_ADMIN_TOKEN)")
    parser.add_argument("--server", required=True, help="a connected server with a tool to call")
    parser.add_argument(
        "--tool", default=None, help="the tool to call (default: echo, else the first safe one)"
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="the edge's MCPGW_MAX_BODY_BYTES")
    parser.add_argument("--log", type=Path, default=None, help="the gateway's log, to count its tracebacks")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--case", type=int, default=None, help="send only this case of the run, and show it")
    args = parser.parse_args(argv)
    token = args.admin_token or os.environ.get("MCPGW_ADMIN_TOKEN")
    result = asyncio.run(
        run_async(
            args.base_url,
            admin_token=token,
            server=args.server,
            requests=args.requests,
            seed=args.seed,
            concurrency=args.concurrency,
            tool=args.tool,
            log=args.log,
            max_seconds=args.max_seconds,
            max_body=args.max_body,
            only=args.case,
        )
    )
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if result["5xx"] or result["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
