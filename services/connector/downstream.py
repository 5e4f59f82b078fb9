"""One downstream MCP server: its session, kept connected, and the calls made over it."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import mcp_types as types
import orjson
from mcp import ClientSession
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, ValidationError

from services import __version__
from services.connector.errors import (
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
    NotConnectedError,
)
from services.connector.forwarding import HttpForwarder, RawResult
from services.connector.oauth import NotAuthorizedError, TokenSource
from services.connector.relay import CallRelay, RelayBoard, Response
from services.connector.subscriptions import SubscriptionCounts
from services.connector.transports import open_transport
from services.contracts import registry_pb2
from services.references import MissingSecretError

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=BaseModel)

LIST_CHANGED = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
    }
)


@dataclass(frozen=True, slots=True)
class Inventory:
    """What a server offers, every definition as it sent it."""

    capabilities: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    resource_templates: list[dict[str, Any]] = field(default_factory=list)
    instructions: str = ""


class State(StrEnum):
    """A server's connection as registry records it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    error: str = ""
    # Failed connection attempts in a row, and when the next one is due (unix seconds).
    attempts: int = 0
    next_attempt_unix: float = 0.0


Report = Callable[[Status, Inventory], Awaitable[None]]
"""Tells registry what a server is now and what it offers."""
# A connection that fails for these fails for its config or environment: state "failed".
CONFIG_ERRORS = (MissingSecretError, FileNotFoundError, PermissionError, ValueError, NotAuthorizedError)
Heard = Callable[[str, str, dict[str, Any]], None]
"""(server, method, params): a notification of the downstream's that edges pass on to the
clients it concerns (notifications/resources/updated, notifications/tasks/status)."""
RELAYED = frozenset({"notifications/resources/updated", "notifications/tasks/status"})


class _WatchedReadStream:
    """Passes messages through and sets `closed` when the transport ends."""

    def __init__(self, inner: Any, closed: anyio.Event) -> None:
        self._inner = inner
        self._closed = closed

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()  # type: ignore[no-any-return]
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._closed.set()
            raise

    async def aclose(self) -> None:
        self._closed.set()
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Downstream:
    """Keeps one server connected (reconnecting with backoff) and forwards calls to it."""

    def __init__(
        self,
        config: registry_pb2.ServerConfig,
        report: Report,
        heard: Heard,
        *,
        call_timeout: float,
        connect_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        credentials: TokenSource | None = None,
    ) -> None:
        self.config = config
        # OAuth tokens for this session; None for a server without OAuth.
        self.credentials = credentials
        self.name = config.name
        self._report = report
        self._heard = heard
        self._subscriptions = SubscriptionCounts()
        self._call_timeout = config.tool_execution_timeout_seconds or call_timeout
        self._connect_timeout = connect_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._dispatcher: JSONRPCDispatcher[Any] | None = None
        self._forwarder: HttpForwarder | None = None
        self._refresh = anyio.Event()
        self._board = RelayBoard()
        # Why the last connection ended, for the report.
        self._lost = ""
        self._connected = anyio.Event()
        # Times this server connected: its reconnects are this less one (a metric).
        self.connections = 0
        # Set once the first connection attempt has concluded, either way.
        self._settled = anyio.Event()
        # Calls and requests in flight, and when the last one ended (for idle eviction).
        self._in_flight = 0
        self.idle_since = time.monotonic()

    @property
    def idle(self) -> bool:
        return self._in_flight == 0

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self.idle_since = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._dispatcher is not None

    async def settled(self, timeout: float) -> None:
        """Return once the first connection attempt has concluded (at once afterwards): a call
        that arrives while a just-started connector is still connecting waits for it, rather
        than failing as not connected while another replica could have taken it."""
        with anyio.move_on_after(timeout):
            await self._settled.wait()

    async def ready(self, timeout: float) -> None:
        """Return once connected, or after `timeout` (calls then fail as not connected)."""
        with anyio.move_on_after(timeout):
            await self._connected.wait()

    async def run(self) -> None:
        """Connect, serve until the connection ends, and try again (with backoff, or when
        asked if auto-reconnect is off), until cancelled."""
        delay = self._backoff_initial
        attempts = 0
        while True:
            state = State.DISCONNECTED
            self._lost = "connection closed"
            served = False
            try:
                await self._serve_once(announce=attempts == 0)
                error = self._lost
            except Exception as raised:
                error, config_error = _describe(raised)
                if config_error:
                    # Retrying cannot help until someone fixes the config or the environment.
                    state = State.FAILED
            finally:
                self._settled.set()
                self._dispatcher = None
                self._forwarder = None
                # Connected at some point: it got as far as serving, so the backoff starts over.
                served = self._connected.is_set()
                if served:
                    self._connected = anyio.Event()
            if served:
                attempts, delay = 0, self._backoff_initial
            else:
                attempts += 1
            # Equal jitter: at least half the step, so attempts stay bounded (full jitter let
            # a closed port be tried more than 10 times a minute in a fifth of simulated runs),
            # and spread, so connectors restarted together do not retry in step.
            wait = random.uniform(delay / 2, delay)  # noqa: S311 (jitter, not a secret)
            manual = self.config.manual_reconnect
            log.warning(
                "server %s %s: %s (attempt %d failed; next in %.1fs)",
                self.name, state, error, attempts, wait,
            )  # fmt: skip
            await self._report(
                Status(state, error, attempts, 0.0 if manual else time.time() + wait), Inventory()
            )
            if manual:
                log.info("server %s waits for a reconnect request (auto-reconnect is off)", self.name)
                await anyio.sleep_forever()
            if self.credentials is not None and self.credentials.ended:
                # Retrying would send the refused token again: only a new authorization (a new
                # session) helps.
                log.info("server %s waits for a new authorization", self.name)
                await anyio.sleep_forever()
            await anyio.sleep(wait)
            delay = min(delay * 2, self._backoff_max)

    async def _serve_once(self, announce: bool) -> None:
        """One connection's lifetime; a retry after a failed attempt is not `announce`d:
        registry keeps the last error."""
        if announce:
            await self._report(Status(State.CONNECTING), Inventory())
        closed = anyio.Event()
        async with (
            open_transport(self.config, self._connect_timeout, self.credentials) as (read, write, endpoint),
            contextlib.AsyncExitStack() as stack,
        ):
            dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(_WatchedReadStream(read, closed), write)
            session = await stack.enter_async_context(
                ClientSession(
                    dispatcher=dispatcher,
                    message_handler=self._on_message,
                    client_info=types.Implementation(name="mcpgw", version=__version__),
                    sampling_callback=self._on_sampling,
                    elicitation_callback=self._on_elicitation,
                    list_roots_callback=self._on_list_roots,
                    logging_callback=self._on_log,
                )
            )
            with anyio.fail_after(self._connect_timeout):
                init = await session.initialize()
                capabilities = init.capabilities.model_dump(by_alias=True, exclude_none=True)
                inventory = await self._inventory(dispatcher, capabilities, init.instructions or "")
            if endpoint is not None:
                self._forwarder = await stack.enter_async_context(
                    HttpForwarder(
                        self.name,
                        endpoint,
                        init.protocol_version,
                        on_notification=self._on_forwarded_notification,
                        on_session_lost=closed.set,
                    )
                )
            self._dispatcher = dispatcher
            self.connections += 1
            self._connected.set()
            self._settled.set()
            log.info(
                "server %s connected (%s, protocol %s, %d tools, %d prompts, %d resources)",
                self.name,
                init.server_info.name,
                init.protocol_version,
                len(inventory.tools),
                len(inventory.prompts),
                len(inventory.resources) + len(inventory.resource_templates),
            )
            await self._report(Status(State.CONNECTED), inventory)
            for uri in self._subscriptions.uris:
                # A new downstream session knows nothing of the old one's subscriptions.
                await self._request("resources/subscribe", orjson.dumps({"uri": uri}))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh_on_change, dispatcher, capabilities, inventory.instructions)
                if self.config.health.ping and self.config.health.interval_seconds > 0:
                    tg.start_soon(self._watch_health, session, closed)
                await closed.wait()
                tg.cancel_scope.cancel()

    async def _watch_health(self, session: ClientSession, closed: anyio.Event) -> None:
        """Ping every interval; after `max_failures` misses in a row the server is gone."""
        health = self.config.health
        failures = 0
        while True:
            await anyio.sleep(health.interval_seconds)
            try:
                with anyio.fail_after(health.timeout_seconds):
                    await session.send_ping()
                failures = 0
            except (TimeoutError, MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                failures += 1
                log.warning(
                    "server %s missed health check %d of %d: %s",
                    self.name,
                    failures,
                    health.max_failures,
                    type(exc).__name__,
                )
                if failures >= max(1, health.max_failures):
                    self._lost = f"{failures} health checks in a row failed"
                    closed.set()
                    return

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, types.ResourceUpdatedNotification | types.TaskStatusNotification):
            self._heard(self.name, message.method, _dump(message.params))
        elif isinstance(
            message,
            types.ToolListChangedNotification
            | types.PromptListChangedNotification
            | types.ResourceListChangedNotification,
        ):
            self._refresh.set()

    # Requests and log messages on the shared session: relayed to the one call that can take them.
    async def _on_sampling(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        response = await self._board.ask("sampling/createMessage", _dump(params))
        return _typed(response, types.CreateMessageResult)

    async def _on_elicitation(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        response = await self._board.ask("elicitation/create", _dump(params))
        return _typed(response, types.ElicitResult)

    async def _on_list_roots(self, context: Any) -> types.ListRootsResult | types.ErrorData:
        return _typed(await self._board.ask("roots/list", None), types.ListRootsResult)

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        message = {"jsonrpc": "2.0", "method": "notifications/message", "params": _dump(params)}
        await self._board.notify(message)

    def _on_forwarded_notification(self, message: dict[str, Any]) -> None:
        if message.get("method") in LIST_CHANGED:
            self._refresh.set()
        elif message.get("method") in RELAYED and isinstance(message.get("params"), dict):
            self._heard(self.name, message["method"], message["params"])

    async def _refresh_on_change(
        self, dispatcher: JSONRPCDispatcher[Any], capabilities: dict[str, Any], instructions: str
    ) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = anyio.Event()
            inventory = await self._inventory(dispatcher, capabilities, instructions)
            log.info(
                "server %s changed its lists: now %d tools, %d prompts, %d resources",
                self.name,
                len(inventory.tools),
                len(inventory.prompts),
                len(inventory.resources) + len(inventory.resource_templates),
            )
            await self._report(Status(State.CONNECTED), inventory)

    async def _inventory(
        self, dispatcher: JSONRPCDispatcher[Any], capabilities: dict[str, Any], instructions: str
    ) -> Inventory:
        """Every list the server's capabilities announce (tools are always asked for)."""
        resources = "resources" in capabilities
        return Inventory(
            capabilities=capabilities,
            instructions=instructions,
            tools=await self._list(dispatcher, "tools/list", "tools", "name"),
            prompts=await self._list(dispatcher, "prompts/list", "prompts", "name")
            if "prompts" in capabilities
            else [],
            resources=await self._list(dispatcher, "resources/list", "resources", "uri") if resources else [],
            resource_templates=await self._list(
                dispatcher, "resources/templates/list", "resourceTemplates", "uriTemplate"
            )
            if resources
            else [],
        )

    async def _list(
        self, dispatcher: JSONRPCDispatcher[Any], method: str, field: str, key: str
    ) -> list[dict[str, Any]]:
        """Every page of one list; entries without a string `key` are dropped."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await dispatcher.send_raw_request(
                method, {"cursor": cursor} if cursor else None, {"timeout": self._connect_timeout}
            )
            items.extend(
                i for i in page.get(field, []) if isinstance(i, dict) and isinstance(i.get(key), str)
            )
            cursor = page.get("nextCursor")
            if not cursor:
                return items

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self._list(self._require(), "tools/list", "tools", "name")

    async def call_tool(
        self,
        tool: str,
        arguments_json: bytes,
        meta: dict[str, Any] | None,
        timeout: float | None = None,
        on_progress: ProgressFnT | None = None,
        relay: CallRelay | None = None,
        task_json: bytes = b"",
        *,
        traceparent: str | None = None,
    ) -> RawResult:
        """The downstream's CallToolResult for `tool` (or its CreateTaskResult when `task_json`
        asks for a task); `arguments_json` is a JSON object or empty; `traceparent` also goes
        in the HTTP header of a Streamable HTTP server."""
        dispatcher = self._require()
        timeout = timeout or self.config.tool_timeouts_seconds.get(tool) or self._call_timeout
        if meta:
            # Progress tokens are minted per hop and mapped back to on_progress.
            meta = {k: v for k, v in meta.items() if k != "progressToken"}
        # Requests and log messages the server sends outside any call's own stream (stdio, SSE,
        # an HTTP server's GET stream) reach this call's client only when it is the only one.
        with self._busy(), self._board.holding(relay):
            if self._forwarder is not None:
                return await self._forwarder.call_tool(
                    tool, arguments_json, meta, timeout, on_progress, relay, task_json, traceparent
                )
            params: dict[str, Any] = {"name": tool}
            if arguments_json:
                params["arguments"] = orjson.loads(arguments_json)
            if meta:
                params["_meta"] = meta
            if task_json:
                params["task"] = orjson.loads(task_json)
            result = await self._send(dispatcher, "tools/call", params, timeout, on_progress)
        return RawResult(orjson.dumps(result), result.get("isError") is True)

    async def request(
        self, method: str, params_json: bytes, timeout: float | None = None, *, traceparent: str | None = None
    ) -> bytes:
        """The downstream's result of any other request, as JSON bytes; subscriptions are
        counted, and only the first and the last of a URI reach the downstream."""
        self._require()
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = orjson.loads(params_json or b"{}").get("uri")
            if isinstance(uri, str):
                counted = (
                    self._subscriptions.want
                    if method == "resources/subscribe"
                    else self._subscriptions.release
                )
                if not counted(uri):
                    return b"{}"
        return await self._request(method, params_json, timeout, traceparent)

    async def _request(
        self, method: str, params_json: bytes, timeout: float | None = None, traceparent: str | None = None
    ) -> bytes:
        dispatcher = self._require()
        timeout = timeout or self._call_timeout
        with self._busy():
            if self._forwarder is not None:
                return (await self._forwarder.request(method, params_json, timeout, traceparent)).json
            params = orjson.loads(params_json) if params_json else None
            return orjson.dumps(await self._send(dispatcher, method, params, timeout, None))

    async def _send(
        self,
        dispatcher: JSONRPCDispatcher[Any],
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressFnT | None,
    ) -> dict[str, Any]:
        opts: CallOptions = {"timeout": timeout}
        if on_progress is not None:
            opts["on_progress"] = on_progress
        try:
            result: dict[str, Any] = await dispatcher.send_raw_request(method, params, opts)
        except MCPError as exc:
            if exc.error.code == types.REQUEST_TIMEOUT:
                raise DownstreamTimeoutError(
                    self.name, f"server {self.name!r} did not answer within {timeout:g}s"
                ) from None
            if exc.error.code == types.CONNECTION_CLOSED:
                raise DownstreamUnavailableError(
                    self.name, f"server {self.name!r} closed the connection during the call"
                ) from None
            raise DownstreamRejectedError(self.name, exc.error) from None
        return result

    def _require(self) -> JSONRPCDispatcher[Any]:
        dispatcher = self._dispatcher
        if dispatcher is None:
            raise NotConnectedError(self.name, f"server {self.name!r} is not connected")
        return dispatcher


def _describe(raised: Exception) -> tuple[str, bool]:
    """What a failed connection says to an operator, and whether its config is at fault."""
    exc: BaseException = raised
    # Transports fail inside task groups: the first leaf says what went wrong.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.error.code}: {exc.error.message}", False
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), isinstance(
        exc, CONFIG_ERRORS
    )


def _dump(params: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = params.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped


def _typed(response: Response, model: type[ResultT]) -> ResultT | types.ErrorData:
    """The client's answer as the SDK session wants it: a result model or an ErrorData."""
    if "error" in response:
        error = response["error"] if isinstance(response["error"], dict) else {}
        return types.ErrorData(
            code=int(error.get("code", types.INTERNAL_ERROR)),
            message=str(error.get("message", "")),
            data=error.get("data"),
        )
    try:
        return model.model_validate(response.get("result"))
    except ValidationError as exc:
        return types.ErrorData(
            code=types.INVALID_PARAMS, message=f"mcpgw: the client's answer is malformed: {exc}"
        )
