"""The downstream of `make bench-scale`: many stateful Streamable HTTP MCP servers in one process.

    python bench/curves_server.py --port 8950 [--servers 100] [--tools 1] [--sdk-calls]

Server i (1..--servers) is at /s<i>/mcp and serves --tools tools, the first of them `sleep`
(answers after `seconds`), in pages of 1000. Built on the `mcp` SDK's low-level server and
session manager, under uvicorn. A `sleep` call on a session the SDK opened is answered
straight from the request's bytes, as mcpgw's connector sends it: through the SDK's session
manager each call costs this process about 1 ms of CPU, a third of a 2-core machine at
10,000 calls, which the gateway under test would not get (--sdk-calls: through the SDK).
Control routes, for the bench:

    POST /control/tools {"count": N}   every server now serves N tools and tells each of its
                                       sessions notifications/tools/list_changed; answers
                                       {"sent_at": <unix time just before sending>, "sessions": n}
    GET  /control/stats                calls in flight now and at most, and when each server
                                       last answered a tools/list (unix time)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
import orjson
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HOST = "127.0.0.1"
PAGE = 1000
SLEEP_TOOL = "sleep"
# Whatever the kernel allows (somaxconn): thousands of connections may arrive at once.
BACKLOG = 16384
SLEPT = {"content": [{"type": "text", "text": "slept"}], "isError": False}
SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
)


Lister = Callable[
    [ServerRequestContext[Any], types.PaginatedRequestParams | None], Awaitable[types.ListToolsResult]
]


class Stats:
    """What the bench reads at /control/stats."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0
        self.listed_at: dict[str, float] = {}

    def as_json(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "most_in_flight": self.most_in_flight,
            "calls": self.calls,
            "listed_at": self.listed_at,
        }


class ListChangingServer(Server[Any]):
    """A low-level server that announces tools.listChanged (the SDK's default is not to)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def tools(count: int) -> list[types.Tool]:
    """`sleep`, then `count - 1` small tools."""
    sleep = types.Tool(
        name=SLEEP_TOOL,
        description="Answer after `seconds`.",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    )
    others = [
        types.Tool(
            name=f"tool_{index:05d}",
            description=f"One of many tools: number {index}.",
            input_schema={"type": "object", "properties": {"value": {"type": "integer"}}},
        )
        for index in range(count - 1)
    ]
    return [sleep, *others][:count]


class Fixture:
    """Every server, their session managers, and the tool list they share."""

    def __init__(self, servers: int, count: int) -> None:
        self.stats = Stats()
        self._tools = tools(count)
        self._sessions: dict[str, dict[str, ServerSession]] = {}
        # The session ids the SDK issued, by server (seen on their opening responses).
        self.opened: dict[str, set[bytes]] = {}
        self.managers: dict[str, StreamableHTTPSessionManager] = {}
        for index in range(1, servers + 1):
            name = f"s{index}"
            server = ListChangingServer(name, on_list_tools=self._lister(name), on_call_tool=self._call)
            self._sessions[name] = {}
            self.opened[name] = set()
            self.managers[name] = StreamableHTTPSessionManager(
                app=server,
                json_response=True,
                security_settings=SECURITY,
                session_idle_timeout=None,
                max_sessions=None,
            )

    def _lister(self, name: str) -> Lister:
        async def list_tools(
            ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            # Kept to tell this session later that the list changed (on its GET stream).
            session_id = getattr(ctx.request, "headers", {}).get("mcp-session-id", str(id(ctx.session)))
            self._sessions[name][session_id] = ctx.session
            start = int(params.cursor) if params is not None and params.cursor else 0
            page = self._tools[start : start + PAGE]
            following = start + PAGE if start + PAGE < len(self._tools) else None
            if following is None:
                self.stats.listed_at[name] = time.time()
            return types.ListToolsResult(
                tools=page, next_cursor=None if following is None else str(following)
            )

        return list_tools

    async def _call(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != SLEEP_TOOL:
            return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])
        await self.sleep((params.arguments or {}).get("seconds", 0))
        return types.CallToolResult(content=[types.TextContent(type="text", text="slept")])

    async def sleep(self, seconds: object) -> None:
        stats = self.stats
        stats.calls += 1
        stats.in_flight += 1
        stats.most_in_flight = max(stats.most_in_flight, stats.in_flight)
        try:
            await anyio.sleep(float(seconds) if isinstance(seconds, int | float) else 0.0)
        finally:
            stats.in_flight -= 1

    async def answer_sleep(self, name: str, scope: Scope, body: bytes, send: Send) -> bool:
        """Answer `body` if it is a `sleep` call on one of the server's sessions; whether it was."""
        session = next((v for k, v in scope["headers"] if k == b"mcp-session-id"), None)
        if session not in self.opened[name]:
            return False
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(message, dict) or message.get("method") != "tools/call" or "id" not in message:
            return False
        params = message.get("params")
        if not isinstance(params, dict):
            return False
        if params.get("name") != SLEEP_TOOL:
            return False
        await self.sleep((params.get("arguments") or {}).get("seconds", 0))
        answer = orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": SLEPT})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return True

    async def change(self, count: int) -> dict[str, Any]:
        """Serve `count` tools from now on and tell every session so."""
        self._tools = tools(count)
        sessions = [s for held in self._sessions.values() for s in held.values()]
        sent_at = time.time()
        for session in sessions:
            # A session the connector has left: nobody to tell.
            with contextlib.suppress(Exception):
                await session.send_tool_list_changed()
        return {"sent_at": sent_at, "sessions": len(sessions)}


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replayed(body: bytes, receive: Receive) -> Receive:
    """`receive` as if `body` had not been read from it yet."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again


def create_app(fixture: Fixture, sdk_calls: bool) -> ASGIApp:
    """The servers at /s<i>/mcp, the control routes beside them."""

    async def change(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(await fixture.change(int(body["count"])))

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(fixture.stats.as_json())

    control = Starlette(
        routes=[
            Route("/control/tools", change, methods=["POST"]),
            Route("/control/stats", stats, methods=["GET"]),
        ]
    )

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for manager in fixture.managers.values():
                await stack.enter_async_context(manager.run())
            yield

    def noting(name: str, send: Send) -> Send:
        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                for key, value in message.get("headers", []):
                    if key == b"mcp-session-id":
                        fixture.opened[name].add(value)
            await send(message)

        return sent

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        # /s<i>/mcp straight to its session manager: no route table walked per call.
        name, _, rest = path.lstrip("/").partition("/")
        manager = fixture.managers.get(name)
        if manager is not None and rest.rstrip("/") == "mcp":
            if scope["method"] == "POST" and not sdk_calls:
                body = await read_body(receive)
                if await fixture.answer_sleep(name, scope, body, send):
                    return
                receive = replayed(body, receive)
            await manager.handle_request(scope, receive, noting(name, send))
        else:
            await control(scope, receive, send)

    async def lifespan(receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with running():
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--servers", type=int, default=1, help="servers, at /s1/mcp ... /s<N>/mcp")
    parser.add_argument("--tools", type=int, default=1, help="tools each server serves (sleep first)")
    parser.add_argument("--sdk-calls", action="store_true", help="sleep calls through the SDK too")
    args = parser.parse_args()
    app = create_app(Fixture(args.servers, args.tools), args.sdk_calls)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=args.port,
        loop="uvloop",
        http="httptools",
        backlog=BACKLOG,
        # The connector keeps its connections for reuse: do not close them under it.
        timeout_keep_alive=120,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
