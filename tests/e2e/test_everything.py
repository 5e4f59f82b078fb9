"""server-everything, the MCP reference server, behind the gateway: a client must see
through `/mcp/<server>` what it sees connected to the server itself.

npm's `@modelcontextprotocol/server-everything` runs twice, in its `streamableHttp` mode
(it keeps an event store, so its SSE answers open with priming events) and in its `sse`
mode (the 2024-11-05 HTTP+SSE transport); one `mcpgw up` fronts both, as `evhttp` and
`evsse`. A client that is not ours, the `mcp` SDK, declaring sampling, elicitation and
roots (server-everything registers some tools only for clients that declare them), connects
once to each server directly and once through the gateway and does the same things on both:
every list, every tool called, every resource read, every template expanded once, every
prompt got, the completions. The two transcripts are compared item by item; what
legitimately differs (timestamps, session ids) is normalised where it is recorded.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, FileUrl

from services.up.main import free_port
from tests.processes import NODE, NODE_DIR, mcpgw_up, port_open, running, wait_until

EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
MODES = ("streamableHttp", "sse")
NAMES = {"streamableHttp": "evhttp", "sse": "evsse"}

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and EVERYTHING.exists()),
    reason="server-everything is not installed: run `make install`",
)

OP_SECONDS = 5  # one request, answered or not
SIDE_SECONDS = 20  # one whole transcript; what is left unrun past it is recorded as such
MAX_READS = 20  # resources read per side, in listing order

SAMPLED = "sampled by the everything test"
ELICITED: dict[str, str | int | float | bool | list[str] | None] = {
    "name": "Ada Lovelace",
    "check": True,
    "email": "ada@example.org",
    "integer": 7,
}
ROOTS = [types.Root(uri=FileUrl("file:///work/project"), name="project")]
GZIPPED = "data:text/plain;base64," + base64.b64encode(b"gzip me through the gateway\n" * 8).decode()

# Every tool server-everything lists for this client, with the calls made to it, in order.
# The toggles are called twice so the (shared, through the gateway) downstream session ends
# as it began; the long-running operation is kept short.
CALLS: dict[str, list[dict[str, Any]]] = {
    "echo": [{"message": "hello through the gateway"}],
    "get-annotated-message": [{"messageType": "error", "includeImage": True}],
    "get-env": [{}],
    "get-resource-links": [{"count": 4}],
    "get-resource-reference": [{"resourceType": "Blob", "resourceId": 3}],
    "get-structured-content": [{"location": "Chicago"}],
    "get-sum": [{"a": 1.5, "b": 40}],
    "get-tiny-image": [{}],
    "gzip-file-as-resource": [{"name": "mcpgw-test.txt.gz", "data": GZIPPED, "outputType": "resourceLink"}],
    "toggle-simulated-logging": [{}, {}],
    "toggle-subscriber-updates": [{}, {}],
    "trigger-long-running-operation": [{"duration": 0.3, "steps": 3}],
    # Registered only for clients that declared roots, elicitation (url mode for the URL
    # one) and sampling; simulate-research-query is registered for every client but needs
    # task augmentation, which this client does not offer: both sides answer with the same
    # isError result.
    "get-roots-list": [{}],
    "trigger-elicitation-request": [{}],
    "trigger-url-elicitation": [
        {"url": "https://example.org/consent", "elicitationId": "mcpgw-everything-1"}
    ],
    "trigger-sampling-request": [{"prompt": "Say hello", "maxTokens": 16}],
    "simulate-research-query": [{"topic": "MCP gateways"}],
}
PROMPTS: dict[str, dict[str, str]] = {
    "simple-prompt": {},
    "args-prompt": {"city": "Lisbon", "state": "Lisboa"},
    "completable-prompt": {"department": "Engineering", "name": "Alice"},
    "resource-prompt": {"resourceType": "Blob", "resourceId": "5"},
}
TEMPLATE_VALUES = {"resourceId": "7"}  # a value for each variable of the listed URI templates
COMPLETIONS: dict[
    str, tuple[types.PromptReference | types.ResourceTemplateReference, dict[str, str], dict[str, str]]
] = {
    "completable-prompt department": (
        types.PromptReference(name="completable-prompt"),
        {"name": "department", "value": "S"},
        {},
    ),
    "completable-prompt name": (
        types.PromptReference(name="completable-prompt"),
        {"name": "name", "value": ""},
        {"department": "Marketing"},
    ),
    "resource-prompt resourceType": (
        types.PromptReference(name="resource-prompt"),
        {"name": "resourceType", "value": "B"},
        {},
    ),
    "text template resourceId": (
        types.ResourceTemplateReference(uri="demo://resource/dynamic/text/{resourceId}"),
        {"name": "resourceId", "value": "12"},
        {},
    ),
}

# --- normalisation ----------------------------------------------------------------------

# The dynamic resources (templates, get-resource-reference, resource-prompt) embed the time
# they were made (`toLocaleTimeString()`), which differs between the two reads.
DYNAMIC = re.compile(r"^(Resource \d+: This is a (?:plaintext resource|base64 blob) created at ).+$", re.S)
# The toggles name the downstream session they toggled: the client's own session directly,
# the gateway's downstream session through it.
SESSION = re.compile(r"session [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        out = {key: normalised(item) for key, item in value.items()}
        blob = value.get("blob")
        if isinstance(blob, str):
            try:
                decoded = base64.b64decode(blob, validate=True).decode()
            except ValueError:
                decoded = ""
            if DYNAMIC.match(decoded):
                out["blob"] = "base64 of: " + DYNAMIC.sub(r"\1<time>", decoded)
        return out
    if isinstance(value, list):
        return [normalised(item) for item in value]
    if isinstance(value, str):
        return SESSION.sub("session <id>", DYNAMIC.sub(r"\1<time>", value))
    return value


def dump(model: BaseModel) -> Any:
    return normalised(model.model_dump(mode="json", by_alias=True, exclude_none=True))


# --- the client -------------------------------------------------------------------------


@dataclass
class Transcript:
    """What one client saw of one server, keyed by what it did."""

    outcomes: dict[str, Any] = field(default_factory=dict)
    asked: list[dict[str, Any]] = field(default_factory=list)  # server → client requests of the current op
    progress: list[list[float | None]] = field(default_factory=list)  # progress of the current op
    logs: list[Any] = field(default_factory=list)  # not compared: their timing and levels are random

    def listing(self, kind: str) -> dict[str, Any]:
        items = self.outcomes.get(f"{kind}/list")
        if not isinstance(items, list):
            return {}
        key = "uriTemplate" if kind == "resources/templates" else "uri" if kind == "resources" else "name"
        return {item[key]: item for item in items}

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.asked.append({"sampling/createMessage": dump(params)})
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append({"elicitation/create": dump(params)})
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content=ELICITED)

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        # Not recorded per op: server-everything also asks on its own 350 ms after initialize.
        return types.ListRootsResult(roots=ROOTS)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.data)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append([progress, total])

    async def attempt(self, key: str, op: Callable[[], Awaitable[Any]], deadline: float) -> Any:
        """Run `op`, recording its normalised result, the requests the server made meanwhile and
        its progress, or the error it ended with. Returns the result (None on error)."""
        self.asked, self.progress = [], []
        value = None
        left = deadline - anyio.current_time()
        if left <= 0:
            self.outcomes[key] = {"error": f"not run: the transcript's {SIDE_SECONDS} s were spent"}
            return None
        try:
            with anyio.fail_after(min(OP_SECONDS, left)):
                value = await op()
        except MCPError as error:
            outcome: Any = {"error": dump(error.error)}
        except TimeoutError:
            outcome = {"error": f"no answer within {min(OP_SECONDS, left):.0f} s"}
        except Exception as error:
            outcome = {"error": described(error)}
        else:
            outcome = dump(value) if isinstance(value, BaseModel) else value
            if self.asked or self.progress:
                outcome = {"result": outcome, "asked": self.asked, "progress": self.progress}
        self.outcomes[key] = outcome
        return value


async def paged(fetch: Callable[[str | None], Awaitable[Any]], attribute: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    for _ in range(100):
        page = await fetch(cursor)
        items.extend(dump(item) for item in getattr(page, attribute))
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError(f"{attribute}: more than 100 pages")


def described(error: BaseException) -> str:
    """An exception, with the leaves of an exception group (a transport's task group)."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(described(leaf) for leaf in error.exceptions)
    return f"{type(error).__name__}: {error}"


def params(cursor: str | None) -> types.PaginatedRequestParams | None:
    return None if cursor is None else types.PaginatedRequestParams(cursor=cursor)


async def exercise(session: ClientSession, seen: Transcript) -> None:
    deadline = anyio.current_time() + SIDE_SECONDS
    attempt = partial(seen.attempt, deadline=deadline)
    result = await attempt("initialize", session.initialize)
    if result is None:
        return
    await attempt("tools/list", partial(paged, lambda c: session.list_tools(params=params(c)), "tools"))
    await attempt("prompts/list", partial(paged, lambda c: session.list_prompts(params=params(c)), "prompts"))
    await attempt(
        "resources/list", partial(paged, lambda c: session.list_resources(params=params(c)), "resources")
    )
    await attempt(
        "resources/templates/list",
        partial(paged, lambda c: session.list_resource_templates(params=params(c)), "resource_templates"),
    )
    for uri in list(seen.listing("resources"))[:MAX_READS]:
        await attempt(f"resources/read {uri}", partial(session.read_resource, uri))
    for template in seen.listing("resources/templates"):
        uri = expand(template)
        await attempt(f"resources/read {uri}", partial(session.read_resource, uri))
    for name, arguments in PROMPTS.items():
        await attempt(f"prompts/get {name}", partial(session.get_prompt, name, arguments))
    for label, (ref, argument, context) in COMPLETIONS.items():
        await attempt(
            f"completion/complete {label}", partial(session.complete, ref, argument, context or None)
        )
    for name, calls in CALLS.items():
        for index, arguments in enumerate(calls):
            called = await attempt(
                call_key(name, index),
                partial(session.call_tool, name, arguments, progress_callback=seen.on_progress),
            )
            if name == "gzip-file-as-resource" and isinstance(called, types.CallToolResult):
                # The link names a resource made for this session: it must read back on it.
                for link in called.content:
                    if isinstance(link, types.ResourceLink):
                        await attempt(
                            f"resources/read {link.uri} (session)", partial(session.read_resource, link.uri)
                        )


def expand(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: TEMPLATE_VALUES.get(m.group(1), m.group(0)), template)


def call_key(name: str, index: int) -> str:
    return f"tools/call {name} #{index + 1}"


TOOL_CALLS = [call_key(name, index) for name, calls in CALLS.items() for index in range(len(calls))]


async def record(url: str, legacy_sse: bool) -> Transcript:
    seen = Transcript()
    try:
        with anyio.fail_after(SIDE_SECONDS + OP_SECONDS):
            async with AsyncExitStack() as stack:
                if legacy_sse:
                    read, write = await stack.enter_async_context(sse_client(url, timeout=OP_SECONDS))
                else:
                    read, write = await stack.enter_async_context(streamable_http_client(url))
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        read_timeout_seconds=OP_SECONDS,
                        sampling_callback=seen.sample,
                        elicitation_callback=seen.elicit,
                        list_roots_callback=seen.roots,
                        logging_callback=seen.log,
                    )
                )
                await exercise(session, seen)
    except Exception as error:  # a transport that broke down ends the transcript, not the run
        seen.outcomes["session"] = {"error": described(error)}
    return seen


# --- processes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """server-everything in each mode on a port of its own; yields each mode's URL."""
    tmp = tmp_path_factory.mktemp("everything")
    paths = {"streamableHttp": "/mcp", "sse": "/sse"}
    with ExitStack() as stack:
        urls = {}
        for mode in MODES:
            port = free_port()
            # An empty environment (but PORT): get-env answers with the server's environment,
            # which is compared whole and printed on a difference, so it holds nothing of ours.
            argv = ["env", "-i", f"PORT={port}", str(NODE), str(EVERYTHING), mode]
            process = stack.enter_context(running(argv, log=tmp / f"{mode}.log"))
            wait_until(partial(port_open, port), 15, f"server-everything {mode}", process)
            urls[mode] = f"http://127.0.0.1:{port}{paths[mode]}"
        yield urls


@pytest.fixture(scope="module")
def gateway(everything: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mcpgw up` in front of both modes; yields its base URL once /readyz lists both."""
    tmp = tmp_path_factory.mktemp("everything-gateway")
    servers: list[dict[str, Any]] = [
        {"name": NAMES["streamableHttp"], "connection_type": "http"},
        {"name": NAMES["sse"], "connection_type": "sse"},
    ]
    for server, mode in zip(servers, MODES, strict=True):
        server.update(connection_string=everything[mode], tools_to_execute=["*"])
    with mcpgw_up(tmp, servers, "mcpgw up with server-everything") as base:
        yield base


@dataclass
class Pair:
    mode: str
    direct: Transcript
    through: Transcript


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def direct(mode: str, everything: dict[str, str]) -> Transcript:
    """The transcript straight from server-everything (over HTTP+SSE in `sse` mode)."""
    return anyio.run(record, everything[mode], mode == "sse")


@pytest.fixture(scope="module")
def pair(mode: str, direct: Transcript, gateway: str) -> Pair:
    """The direct transcript and the one through `/mcp/<name>` (Streamable HTTP), made after it."""
    return Pair(mode, direct, anyio.run(record, f"{gateway}/mcp/{NAMES[mode]}", False))


# --- comparisons ------------------------------------------------------------------------


def same(pair: Pair, key: str) -> None:
    """The outcome of `key` through the gateway is the direct one."""
    direct = pair.direct.outcomes.get(key, "<not recorded>")
    through = pair.through.outcomes.get(key, "<not recorded>")
    assert_same(pair, key, direct, through)


def assert_same(pair: Pair, what: str, direct: Any, through: Any) -> None:
    if direct == through:
        return
    lines = difflib.unified_diff(
        json.dumps(direct, indent=1, sort_keys=True, ensure_ascii=False).splitlines(),
        json.dumps(through, indent=1, sort_keys=True, ensure_ascii=False).splitlines(),
        "direct",
        f"through /mcp/{NAMES[pair.mode]}",
        lineterm="",
        n=2,
    )
    shown = [line if len(line) <= 200 else f"{line[:200]}… ({len(line)} characters)" for line in lines]
    session = pair.through.outcomes.get("session")
    ended = f"\n(the transcript through the gateway ended with {session})" if session else ""
    raise AssertionError(f"{pair.mode} {what} differs:\n" + "\n".join(shown) + ended)


def test_the_direct_side_is_whole(direct: Transcript) -> None:
    """The direct transcript is the reference: it ran to its end without an error, and the
    tables above cover what server-everything lists to this client."""
    assert "session" not in direct.outcomes, direct.outcomes["session"]
    assert set(direct.listing("tools")) == set(CALLS)
    assert set(direct.listing("prompts")) == set(PROMPTS)
    assert direct.listing("resources")
    for template in direct.listing("resources/templates"):
        assert "{" not in expand(template), template
    errors = {key: got for key, got in direct.outcomes.items() if isinstance(got, dict) and "error" in got}
    assert not errors, errors
    for key in TOOL_CALLS:
        outcome = direct.outcomes[key]
        result = outcome.get("result", outcome)
        if key.startswith("tools/call simulate-research-query"):
            assert result["isError"], result
            assert "requires task augmentation" in result["content"][0]["text"], result
        else:
            assert not result.get("isError"), (key, result)


@pytest.mark.parametrize("kind", ["tools", "prompts", "resources", "resources/templates"])
def test_lists_match(pair: Pair, kind: str) -> None:
    direct, through = pair.direct.listing(kind), pair.through.listing(kind)
    assert direct, f"{pair.mode}: the server lists no {kind}"
    assert sorted(through) == sorted(direct), f"{pair.mode} {kind}/list names differ"
    for name in direct:
        assert_same(pair, f"{kind}/list item {name}", direct[name], through[name])


@pytest.mark.parametrize("tool", TOOL_CALLS)
def test_tool_calls_match(pair: Pair, tool: str) -> None:
    same(pair, tool)


def test_resource_reads_match(pair: Pair) -> None:
    reads = [key for key in pair.direct.outcomes if key.startswith("resources/read")]
    assert reads
    failures = []
    for key in reads:
        try:
            same(pair, key)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompts_match(pair: Pair, prompt: str) -> None:
    same(pair, f"prompts/get {prompt}")


@pytest.mark.parametrize("label", list(COMPLETIONS))
def test_completions_match(pair: Pair, label: str) -> None:
    same(pair, f"completion/complete {label}")


def test_the_server_instructions_reach_the_client(pair: Pair) -> None:
    """`/mcp/<name>` serves one server alone: its instructions (server-everything's say how
    its tools fit together) are the client's to read, as they are directly."""
    direct, through = pair.direct.outcomes["initialize"], pair.through.outcomes["initialize"]
    assert "error" not in through, through
    assert direct.get("instructions")
    assert through.get("instructions") == direct["instructions"]


def test_the_capabilities_are_the_servers(pair: Pair) -> None:
    """What the server announces, `tasks` included (the gateway relays them)."""
    direct, through = pair.direct.outcomes["initialize"], pair.through.outcomes["initialize"]
    assert "error" not in through, through
    assert "tasks" in direct["capabilities"]
    assert_same(pair, "initialize capabilities", direct["capabilities"], through["capabilities"])


# --- tasks ------------------------------------------------------------------------------

TASK_SECONDS = 15  # simulate-research-query runs four one-second stages


async def raw(session: ClientSession, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A request of the tasks utility, its result as sent. The SDK's client has no methods for
    them and checks a tools/call result as a CallToolResult (a CreateTaskResult is not one),
    so this goes to its dispatcher."""
    result: dict[str, Any] = await session._dispatcher.send_raw_request(
        method, params, {"timeout": OP_SECONDS}
    )
    return result


async def run_task(url: str, legacy_sse: bool) -> tuple[dict[str, Any], list[str]]:
    """One client's task lifecycle on simulate-research-query (which requires task
    augmentation): what it saw, normalised, and the task ids it was given."""
    seen: dict[str, Any] = {}
    ids: list[str] = []
    with anyio.fail_after(TASK_SECONDS + OP_SECONDS):
        async with AsyncExitStack() as stack:
            if legacy_sse:
                read, write = await stack.enter_async_context(sse_client(url, timeout=OP_SECONDS))
            else:
                read, write = await stack.enter_async_context(streamable_http_client(url))
            session = await stack.enter_async_context(
                ClientSession(read, write, read_timeout_seconds=OP_SECONDS)
            )
            await session.initialize()

            async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
                return await raw(session, method, params)

            call = {"name": "simulate-research-query", "arguments": {"topic": "MCP gateways"}}
            created = await ask("tools/call", {**call, "task": {"ttl": 60000}})
            task_id = created["task"]["taskId"]
            ids.append(task_id)
            seen["created"] = created["task"]["status"]
            statuses: list[str] = []
            while True:
                got = await ask("tasks/get", {"taskId": task_id})
                assert got["taskId"] == task_id, got
                if not statuses or statuses[-1] != got["status"]:
                    statuses.append(got["status"])
                if got["status"] in ("completed", "failed", "cancelled"):
                    break
                await anyio.sleep(got.get("pollInterval", 200) / 1000)
            seen["statuses"] = statuses[-1]
            result = await ask("tasks/result", {"taskId": task_id})
            seen["result"] = normalised({k: v for k, v in result.items() if k != "_meta"})
            listed = await ask("tasks/list", {})
            seen["listed"] = task_id in [t["taskId"] for t in listed["tasks"]]
            second = await ask("tools/call", {**call, "task": {"ttl": 60000}})
            ids.append(second["task"]["taskId"])
            cancelled = await ask("tasks/cancel", {"taskId": second["task"]["taskId"]})
            seen["cancelled"] = cancelled["status"]
    return seen, ids


def test_a_task_runs_through_the_gateway_as_it_does_directly(
    mode: str, everything: dict[str, str], gateway: str
) -> None:
    direct, _ = anyio.run(run_task, everything[mode], mode == "sse")
    through, ids = anyio.run(run_task, f"{gateway}/mcp/{NAMES[mode]}", False)
    assert direct == through
    assert direct["statuses"] == "completed" and direct["listed"] and direct["cancelled"] == "cancelled"
    assert all(len(task_id) > 40 for task_id in ids), "the ids the gateway gives are its own"


def test_a_task_is_its_owner_s_alone(gateway: str) -> None:
    """Another client, on the same shared downstream session, neither sees nor reaches it."""
    _, ids = anyio.run(run_task, f"{gateway}/mcp/{NAMES['streamableHttp']}", False)

    async def stranger() -> tuple[Any, list[str]]:
        async with (
            streamable_http_client(f"{gateway}/mcp/{NAMES['streamableHttp']}") as (read, write),
            ClientSession(read, write, read_timeout_seconds=OP_SECONDS) as session,
        ):
            await session.initialize()
            listed = await raw(session, "tasks/list", {})
            with pytest.raises(MCPError) as refused:
                await raw(session, "tasks/get", {"taskId": ids[0]})
            return refused.value.error, [t["taskId"] for t in listed["tasks"]]

    error, listed = anyio.run(stranger)
    assert error.code == -32602 and "unknown task" in error.message
    assert not set(ids) & set(listed)
