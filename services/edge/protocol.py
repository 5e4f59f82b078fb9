"""The MCP methods the edge answers, independent of the HTTP transport that carries them."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from services import __version__
from services.contracts import connector_pb2, events_pb2
from services.edge import toolsearch
from services.edge.approvals import Approvals, CallApproval
from services.edge.auditing import AuditPublisher
from services.edge.calls import Call, Calls, LocalCall, Relay, no_connector, rpc_error, tool_error_result
from services.edge.catalog import CodeView, Listing, Route, View
from services.edge.codemode import meta as mode
from services.edge.codemode.sandbox import Sandbox
from services.edge.connector_client import ConnectorClient, ConnectorUnavailableError
from services.edge.errors import (
    ApprovalRequiredError,
    EdgeError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    JsonRpcId,
    MethodNotFoundError,
    ResourceNotFoundError,
)
from services.edge.identity.connections import Connections
from services.edge.limits.limiter import NO_CHARGE, Limiter
from services.edge.peers import Peers, owner
from services.edge.records import (
    LLM_REQUEST_META_KEY,
    NO_PAYLOADS,
    NO_SENDER,
    Operation,
    Payloads,
    Sender,
    failed,
    llm_request_of,
    operation_event,
    trace_of,
)
from services.edge.session_state import SessionState
from services.edge.sessions import URL_ELICITATION, Session
from services.edge.tasks import TASK_METHODS, TaskIds, owner_of
from services.edge.uris import exposed_result
from services.telemetry import TraceContext, current_trace

log = logging.getLogger(__name__)

SERVER_INFO = {"name": "mcpgw", "title": "mcpgw MCP gateway", "version": __version__}


# searchTools answers from memory: its call's deadline is short.
SEARCH_SECONDS = 5.0
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# Client capabilities that mean it answers requests a downstream may make during a call.
ANSWERABLE = ("elicitation", "roots", "sampling")
# The capability a server must declare for a method to exist on its /mcp/{server}.
CAPABILITY_OF = {
    "tools/list": "tools",
    "tools/call": "tools",
    "prompts/list": "prompts",
    "prompts/get": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "resources/read": "resources",
    "resources/subscribe": "resources",
    "resources/unsubscribe": "resources",
    "completion/complete": "completions",
    "logging/setLevel": "logging",
    "tasks/get": "tasks",
    "tasks/result": "tasks",
    "tasks/list": "tasks",
    "tasks/cancel": "tasks",
}
LISTS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resource_templates",
}


@dataclass(slots=True)
class CallContext:
    session: Session | None
    request_id: JsonRpcId
    view: View
    # What a tools/call may send its client before the result (nothing: one unary gRPC call),
    # and the lowest log level it passes on (None: every level).
    relay: Relay = Relay.NONE
    log_level: str | None = None
    # Who sent it over HTTP, and the trace context of its headers.
    sender: Sender = NO_SENDER
    # A call that needs approval waits for an operator rather than asking the client (the
    # execution API's callers are applications, not people with a client to answer in).
    operator_approves: bool = False


def log_filter(level: str | None) -> Callable[[bytes], bool] | None:
    """Whether a notification passes a log level: None lets all through, and a level that is
    not one (a 2026-07-28 request that asked for none) lets no log message through."""
    if level is None:
        return None
    floor = LOG_LEVELS.index(level) if level in LOG_LEVELS else len(LOG_LEVELS)

    def passes(message: bytes) -> bool:
        if b'"notifications/message"' not in message:
            return True
        logged = (orjson.loads(message).get("params") or {}).get("level")
        return logged in LOG_LEVELS and LOG_LEVELS.index(logged) >= floor

    return passes


def answerable(capabilities: object) -> tuple[str, ...]:
    """Which server-to-client requests a client's declared capabilities say it answers, and
    "elicitation.url" when it opens URLs for its user (a connection's link)."""
    if not isinstance(capabilities, dict):
        return ()
    answers = tuple(c for c in ANSWERABLE if c in capabilities)
    elicitation = capabilities.get("elicitation")
    opens_urls = isinstance(elicitation, dict) and "url" in elicitation
    return (*answers, URL_ELICITATION) if opens_urls else answers


@dataclass(frozen=True, slots=True)
class Hello:
    """What an `initialize` request settles: the version, who the client is, what it answers."""

    version: str
    client_name: str
    answers: tuple[str, ...]


def hello(params: dict[str, Any] | None) -> Hello:
    """The settlement of an `initialize` request's params; InvalidParamsError when unusable."""
    params = params or {}
    if not isinstance(params.get("protocolVersion"), str):
        raise InvalidParamsError('Invalid params: "protocolVersion" must be a string')
    client = params.get("clientInfo")
    name = client.get("name") if isinstance(client, dict) else None
    return Hello(
        negotiate_version(params["protocolVersion"]),
        name[:64] if isinstance(name, str) else "",
        answerable(params.get("capabilities")),
    )


def negotiate_version(requested: object) -> str:
    """The client's version when the gateway speaks it, else the newest handshake version."""
    if isinstance(requested, str) and requested in HANDSHAKE_PROTOCOL_VERSIONS:
        return requested
    return LATEST_HANDSHAKE_VERSION


def _named(routes: dict[str, Route], params: dict[str, Any], kind: str) -> Route:
    name = params.get("name")
    if not isinstance(name, str):
        raise InvalidParamsError('Invalid params: "name" must be a string')
    route = routes.get(name)
    if route is None:
        raise InvalidParamsError(f"Unknown {kind}: {name}")
    return route


def _resource(view: View, uri: object) -> Route:
    if not isinstance(uri, str):
        raise InvalidParamsError('Invalid params: "uri" must be a string')
    route = view.resource_route(uri)
    if route is None:
        raise ResourceNotFoundError(f"Resource not found: {uri}", {"uri": uri})
    return route


def _key(ctx: CallContext) -> str:
    """The caller's virtual key id, which a per_user server's session is chosen by."""
    return "" if ctx.session is None else ctx.session.key_id


def _as_shown(view: View, route: Route, result_json: bytes) -> bytes:
    """A downstream's result with its resource URIs as the client's view names them."""
    return result_json if view.server is not None else exposed_result(route.server, result_json)


class McpHandler:
    def __init__(
        self,
        connector: ConnectorClient,
        audit: AuditPublisher,
        edge_id: str,
        peers: Peers | None = None,
        state: SessionState | None = None,
        *,
        timeout: Callable[[str, str | None], float],
        task_ids: TaskIds,
        payloads: Payloads = NO_PAYLOADS,
        price: Callable[[str, str], float] = lambda server, tool: 0.0,
        connections: Connections | None = None,
        limiter: Limiter | None = None,
        sandbox: Sandbox | None = None,
        approvals: Approvals | None = None,
        needs_approval: Callable[[str, str, str], bool] = lambda key_id, server, tool: False,
    ) -> None:
        # Calls of tools outside their key's tools_to_auto_execute wait for a person.
        self._approvals = approvals
        self._needs_approval = needs_approval
        # Where Code Mode's scripts run.
        self._sandbox = sandbox
        # What calls may spend: rate limits and budgets.
        self._limiter = limiter
        # The links identities connect their own accounts at (per_user_oauth servers).
        self._connections = connections
        # What one call of (server, tool) costs, for its record.
        self._price = price
        # Whether tool calls' arguments and results go into their records.
        self._payloads = payloads
        # Task ids as clients see them: signed, naming the server, the task and its owner.
        self._task_ids = task_ids
        # How long a request to (server, tool) may take.
        self._timeout = timeout
        self._peers = peers
        self._state = state
        self._connector = connector
        self._audit = audit
        self._edge_id = edge_id
        self.calls = Calls(edge_id)

    async def client_replied(self, request_id: JsonRpcId, answer: dict[str, Any]) -> None:
        """A client's response to a request an edge relayed: resolved here when this edge
        asked, else sent to the edge that did; ids no edge issued are ignored."""
        if self.calls.reply(request_id, answer) or not isinstance(request_id, str):
            return
        if self._peers is not None and owner(request_id) not in ("", self._edge_id):
            await self._peers.reply(request_id, answer)

    async def client_cancelled(self, session: Session, params: dict[str, Any] | None) -> None:
        """A client's notifications/cancelled: its call is cancelled on whichever edge runs it."""
        request_id = (params or {}).get("requestId")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return
        if not self.calls.cancel(session.id, str(request_id)) and self._peers is not None:
            await self._peers.cancel(session.id, str(request_id))

    def initialize_result(self, version: str, view: View) -> bytes:
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": view.capabilities,
            "serverInfo": SERVER_INFO,
        }
        if view.instructions:
            result["instructions"] = view.instructions
        return orjson.dumps(result)

    async def request(self, ctx: CallContext, method: str, params: dict[str, Any] | None) -> bytes:
        """The JSON result of one request, or an EdgeError; recorded either way."""
        params = params or {}
        offered = ctx.view.server is None or "tools" in ctx.view.capabilities
        if method == "tools/call" and offered:
            return await (await self.open_call(ctx, params)).result()
        op = Operation(self._audit, self._edge_id, method, params, ctx.session, ctx.request_id, ctx.sender)
        current_trace.set(op.trace.trace_id)
        try:
            result = await self._answer(ctx, method, params, op)
        except EdgeError as exc:
            await op.failed(exc)
            raise
        except BaseException:
            # Cancelled, or a fault of ours: recorded as the internal error the client sees.
            with anyio.CancelScope(shield=True):
                await op.failed(InternalError("Internal error: the request did not complete"))
            raise
        await op.succeeded()
        return result

    async def _answer(self, ctx: CallContext, method: str, params: dict[str, Any], op: Operation) -> bytes:
        if not isinstance(params.get("_meta", {}), dict):
            raise InvalidParamsError('Invalid params: "_meta" must be an object')
        needs = CAPABILITY_OF.get(method)
        if ctx.view.server is not None and needs is not None and needs not in ctx.view.capabilities:
            # /mcp/{server} is that server: what it does not offer is unknown there too.
            raise MethodNotFoundError(f"Method not found: {method}")
        if method in LISTS:
            listing: Listing = getattr(ctx.view, LISTS[method])
            return listing.page(params.get("cursor"))
        if method == "prompts/get":
            route = _named(ctx.view.prompt_routes, params, "prompt")
            result = await self.forward(route, method, {**params, "name": route.name}, _key(ctx), op)
            return _as_shown(ctx.view, route, result)
        if method == "resources/read":
            route = _resource(ctx.view, params.get("uri"))
            result = await self.forward(route, method, {**params, "uri": route.name}, _key(ctx), op)
            return _as_shown(ctx.view, route, result)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(ctx, method, params, op)
        if method == "completion/complete":
            return await self._complete(ctx, params, op)
        if method in TASK_METHODS:
            return await self._task(ctx, method, params, op)
        if method == "logging/setLevel":
            if params.get("level") not in LOG_LEVELS:
                raise InvalidParamsError(f'Invalid params: "level" must be one of {list(LOG_LEVELS)}')
            # Per session: the downstream's own level is shared by every client, so it stays.
            if ctx.session is not None and ctx.session.id and self._state is not None:
                await self._state.set_level(ctx.session.id, params["level"])
            return b"{}"
        if method == "ping":
            return b"{}"
        if method == "initialize":
            raise InvalidRequestError("Invalid Request: the session is already initialized")
        raise MethodNotFoundError(f"Method not found: {method}")

    async def _subscription(
        self, ctx: CallContext, method: str, params: dict[str, Any], op: Operation
    ) -> bytes:
        """A session's (un)subscription, recorded for the edges; the downstream, shared by every
        client, hears only of a session's first subscribe and its matching unsubscribe."""
        route = _resource(ctx.view, params.get("uri"))
        if ctx.session is not None and ctx.session.id and self._state is not None:
            change = self._state.subscribe if method == "resources/subscribe" else self._state.unsubscribe
            if not await change(ctx.session.id, route.server, route.name):
                return b"{}"
        return await self.forward(route, method, {**params, "uri": route.name}, _key(ctx), op)

    def wants_logs(self, session: Session) -> bool:
        """Whether a session asked for log messages (logging/setLevel)."""
        return self._state is not None and self._state.level(session.id) is not None

    def session_level(self, session: Session) -> str | None:
        """The log level a session asked for (None: it set none, so every message passes)."""
        return None if self._state is None else self._state.level(session.id)

    async def end_session(self, session: Session) -> None:
        """End a session on every edge, and undo what it left behind: its subscriptions
        downstream and its log level."""
        if self._state is None:
            return
        for server, uri in await self._state.end(session.id):
            try:
                await self.forward(Route(server, uri), "resources/unsubscribe", {"uri": uri}, session.key_id)
            except EdgeError as exc:
                log.info("unsubscribing ended session from %s on %s: %s", uri, server, exc.message)

    async def _complete(self, ctx: CallContext, params: dict[str, Any], op: Operation) -> bytes:
        view = ctx.view
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise InvalidParamsError('Invalid params: "ref" must be an object')
        if ref.get("type") == "ref/prompt":
            route = _named(view.prompt_routes, ref, "prompt")
            ref = {**ref, "name": route.name}
        elif ref.get("type") == "ref/resource":
            route = _resource(view, ref.get("uri"))
            ref = {**ref, "uri": route.name}
        else:
            raise InvalidParamsError('Invalid params: "ref.type" must be ref/prompt or ref/resource')
        return await self.forward(route, "completion/complete", {**params, "ref": ref}, _key(ctx), op)

    async def forward(
        self, route: Route, method: str, params: dict[str, Any], key_id: str = "", op: Operation | None = None
    ) -> bytes:
        """The downstream's result of a request other than tools/call (for the caller's key),
        in the trace of the operation `op` it serves."""
        # Work of the edge's own (a session's cleanup) is in no trace: its span is never recorded.
        trace = None if op is None else op.trace
        if op is not None:
            op.reach(route.server, route.name)
        try:
            request = connector_pb2.ForwardRequest(
                server=route.server,
                method=method,
                params_json=orjson.dumps(params),
                key_id=key_id,
                timeout_seconds=self._timeout(route.server, None),
            )
            outcome = await self._connector.forward(request, trace)
        except ConnectorUnavailableError as exc:
            log.warning("%s to %s failed: connector unavailable: %s", method, route.server, exc)
            raise rpc_error(no_connector(exc)) from None
        if outcome.HasField("error"):
            needs = outcome.error.failure == connector_pb2.FAILURE_NEEDS_CONNECTION
            if needs and op is not None and self._connections is not None:
                raise self._connections.required(op.session, op.sender, route.server)
            raise rpc_error(outcome.error)
        return outcome.result_json

    async def _task(self, ctx: CallContext, method: str, params: dict[str, Any], op: Operation) -> bytes:
        """tasks/get, tasks/result, tasks/cancel of a task the caller created, or tasks/list of them."""
        owner = owner_of(ctx.session)
        if method == "tasks/list":
            return await self._list_tasks(ctx, owner, op)
        server, task_id = self._task_ids.resolve(params.get("taskId"), owner)
        if server not in ctx.view.task_servers:
            raise InvalidParamsError(f"Invalid params: unknown task {params.get('taskId')!r}")
        route = Route(server, task_id)
        result = await self.forward(route, method, {**params, "taskId": task_id}, _key(ctx), op)
        return _as_shown(ctx.view, route, self._task_ids.exposed_result(server, owner, result))

    async def _list_tasks(self, ctx: CallContext, owner: str, op: Operation) -> bytes:
        """The caller's tasks on the view's servers (a downstream lists every client's: the
        session is shared, so only those this owner created are shown)."""
        mine = set() if self._state is None else self._state.tasks_of(owner)
        tasks: list[Any] = []
        for server in sorted(ctx.view.task_servers):
            wanted = {task_id for s, task_id in mine if s == server}
            if not wanted:
                continue
            listed = orjson.loads(await self.forward(Route(server, ""), "tasks/list", {}, _key(ctx), op))
            for task in listed.get("tasks") or []:
                if isinstance(task, dict) and task.get("taskId") in wanted:
                    task["taskId"] = self._task_ids.expose(server, task["taskId"], owner)
                    tasks.append(task)
        return orjson.dumps({"tasks": tasks})

    def _presenter(
        self, ctx: CallContext, route: Route, task: bool
    ) -> Callable[[bytes], Awaitable[bytes]] | None:
        """How a tools/call result is shown to its client: resource URIs as the aggregate names
        them; a task it created recorded for its owner and its id signed for them."""
        if not task and ctx.view.server is not None:
            return None
        owner = owner_of(ctx.session)

        async def present(result: bytes) -> bytes:
            if task and b'"task"' in result:
                created = orjson.loads(result).get("task")
                if isinstance(created, dict) and isinstance(created.get("taskId"), str):
                    if self._state is not None:
                        await self._state.add_task(owner, route.server, created["taskId"])
                    result = self._task_ids.exposed_result(route.server, owner, result)
            return _as_shown(ctx.view, route, result)

        return present

    async def open_call(self, ctx: CallContext, params: dict[str, Any] | None) -> Call:
        """The Call a tools/call request makes (InvalidParamsError for one that names no tool
        the caller may use, audited as such); the transport runs it and reads what it sends."""
        started = time.time_ns()
        trace = trace_of(ctx.sender, params)
        current_trace.set(trace.trace_id)
        try:
            return await self._open_call(ctx, params, trace)
        except EdgeError as exc:
            name = (params or {}).get("name")
            event = operation_event(
                self.calls.edge_id,
                "tools/call",
                name if isinstance(name, str) else "",
                ctx.session,
                ctx.request_id,
                ctx.sender,
                trace,
                started,
                llm_request_of(ctx.sender, params),
            )
            failed(event, exc)
            if isinstance(exc, ApprovalRequiredError):
                event.approval = events_pb2.APPROVAL_UNASKED
                event.server, event.tool = exc.server, exc.tool
            self._audit.submit(event)
            raise

    async def _open_call(self, ctx: CallContext, params: dict[str, Any] | None, trace: TraceContext) -> Call:
        params = params or {}
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidParamsError('Invalid params: "name" must be a string')
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise InvalidParamsError('Invalid params: "arguments" must be an object')
        meta = params.get("_meta")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidParamsError('Invalid params: "_meta" must be an object')
        if ctx.view.code is not None and name in mode.NAMES:
            return self._meta_call(ctx, ctx.view.code, name, arguments or {}, params, trace)
        index = ctx.view.search
        if index is not None and name == toolsearch.SEARCH:
            found = toolsearch.answer_search(index, arguments or {})

            async def searched(call: LocalCall) -> tuple[bytes, bool]:
                return found.result_json, found.is_error

            llm = llm_request_of(ctx.sender, params)
            return self._local_call(ctx, name, arguments or {}, llm, trace, searched, SEARCH_SECONDS)
        if index is not None and name == toolsearch.CALL:
            # callTool(name, arguments) is that tool's call, recorded under its own name.
            name, arguments = (arguments or {}).get("name"), (arguments or {}).get("arguments")
            if not isinstance(name, str):
                raise InvalidParamsError('Invalid params: callTool\'s "name" must be a string')
            if arguments is not None and not isinstance(arguments, dict):
                raise InvalidParamsError('Invalid params: callTool\'s "arguments" must be an object')
        route = ctx.view.tool_routes.get(name)
        if route is None:
            raise InvalidParamsError(f"Unknown tool: {name}")
        task = params.get("task")
        if task is not None and not isinstance(task, dict):
            raise InvalidParamsError('Invalid params: "task" must be an object')
        request = connector_pb2.CallToolRequest(
            server=route.server,
            tool=route.name,
            key_id=_key(ctx),
            arguments_json=b"" if arguments is None else orjson.dumps(arguments),
            meta_json=orjson.dumps(meta) if isinstance(meta, dict) else b"",
            timeout_seconds=self._timeout(route.server, route.name),
            task_json=b"" if task is None else orjson.dumps(task),
        )
        approval = self._approval_of(ctx, route, name, request.arguments_json)
        price = self._price(route.server, route.name)
        charge = NO_CHARGE
        if self._limiter is not None:
            charge = await self._limiter.admit(request, name, price)
        return Call(
            self.calls,
            self._connector,
            self._audit,
            request,
            name,
            session=ctx.session,
            request_id=ctx.request_id,
            trace=trace,
            sender=ctx.sender,
            llm_request_id=llm_request_of(ctx.sender, params),
            payloads=self._payloads,
            price=price,
            charge=charge,
            relay=ctx.relay,
            log_filter=log_filter(ctx.log_level),
            present=self._presenter(ctx, route, task is not None),
            connections=self._connections,
            approval=approval,
        )

    def _approval_of(
        self, ctx: CallContext, route: Route, name: str, arguments_json: bytes
    ) -> CallApproval | None:
        """What a call waits for before it runs; ApprovalRequiredError when it needs a person
        and there is nobody to ask."""
        key_id = _key(ctx)
        if not key_id or not self._needs_approval(key_id, route.server, route.name):
            return None
        can_ask = Relay.ASK in ctx.relay and ctx.session is not None and "elicitation" in ctx.session.answers
        if self._approvals is None or not (can_ask or ctx.operator_approves):
            raise ApprovalRequiredError(
                f"mcpgw: {name} needs a person's approval before it runs, and this client cannot be "
                "asked: it declared no elicitation capability. Use a client that does, or have "
                "an operator approve it through the execution API",
                route.server,
                route.name,
            )
        return self._approvals.of_call(key_id, name, arguments_json)

    def _meta_call(
        self,
        ctx: CallContext,
        code: CodeView,
        name: str,
        arguments: dict[str, Any],
        params: dict[str, Any],
        trace: TraceContext,
    ) -> Call:
        """A call of one of Code Mode's meta-tools, which this edge answers: a script's tool
        calls go through `open_call` as the client's own would, each a child of this one."""
        sandbox = self._sandbox
        llm_request_id = llm_request_of(ctx.sender, params)
        inner_ids = itertools.count(1)

        async def host(parent: Call, exposed: str, tool_arguments: dict[str, Any]) -> Any:
            inner_meta: dict[str, Any] = {"traceparent": parent.trace.traceparent}
            if llm_request_id:
                inner_meta[LLM_REQUEST_META_KEY] = llm_request_id
            inner = CallContext(
                ctx.session, f"{ctx.request_id}.{next(inner_ids)}", code.inner, sender=ctx.sender
            )
            call_params = {"name": exposed, "arguments": tool_arguments, "_meta": inner_meta}
            try:
                result = await (await self.open_call(inner, call_params)).result()
            except EdgeError as exc:
                raise RuntimeError(f"{exposed}: {exc.message}") from None
            return mode.script_value(result)

        async def answer(call: LocalCall) -> tuple[bytes, bool]:
            if sandbox is None:
                return tool_error_result("mcpgw: Code Mode has no sandbox on this edge"), True
            try:
                answered = await mode.answer(
                    name,
                    arguments,
                    code.modules,
                    code.binding,
                    sandbox,
                    lambda exposed, tool_arguments: host(call, exposed, tool_arguments),
                )
            except mode.ArgumentsError as exc:
                return tool_error_result(str(exc)), True
            return answered.result_json, answered.is_error

        timeout = sandbox.limits.wall_seconds if sandbox is not None else 1.0
        return self._local_call(ctx, name, arguments, llm_request_id, trace, answer, timeout)

    def _local_call(
        self,
        ctx: CallContext,
        name: str,
        arguments: dict[str, Any],
        llm_request_id: str,
        trace: TraceContext,
        answer: Callable[[LocalCall], Awaitable[tuple[bytes, bool]]],
        timeout: float,
    ) -> Call:
        """A call of a tool this edge answers itself, recorded and cancelled as any call."""
        request = connector_pb2.CallToolRequest(
            tool=name, key_id=_key(ctx), arguments_json=orjson.dumps(arguments), timeout_seconds=timeout
        )
        return LocalCall(
            self.calls,
            self._connector,
            self._audit,
            request,
            name,
            session=ctx.session,
            request_id=ctx.request_id,
            trace=trace,
            sender=ctx.sender,
            llm_request_id=llm_request_id,
            payloads=self._payloads,
            relay=ctx.relay,
            log_filter=log_filter(ctx.log_level),
            answer=answer,
        )
