"""The "try it" page: a tool's arguments as a form, and one call under a key's view run
through the handler every MCP transport uses."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import orjson
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.edge.calls import Call
from services.edge.console import forms
from services.edge.console.api import ApiFailure
from services.edge.console.base import Pages, Shared
from services.edge.console.session import ConsoleSession
from services.edge.errors import EdgeError
from services.edge.protocol import CallContext, McpHandler
from services.edge.records import Sender
from services.edge.sessions import Session

CLIENT_NAME = "mcpgw-console"
# What a "try it" call may take beyond its tool's own timeout before the page gives up.
TRY_SECONDS = 120.0


class TryPages(Pages):
    """The try-it form and the call it runs (None for `handler`: this edge runs none)."""

    def __init__(self, shared: Shared, handler: McpHandler | None) -> None:
        super().__init__(shared)
        self.handler = handler

    def routes(self) -> list[Route]:
        return [Route("/ui/try", self.signed_in(self.try_tool), methods=["GET", "POST"])]

    async def try_tool(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        source = form if form is not None else request.query_params
        server, tool = str(source.get("server") or ""), str(source.get("tool") or "")

        async def shown() -> dict[str, Any]:
            listed = await self.api.get("/api/tools", {"server": server})
            found = next((t for t in listed if t["name"] == tool), None)
            if found is None:
                raise ApiFailure(404, f"No tool {tool!r} on server {server!r}.")
            definition = self.definitions().get((server, tool), {})
            fields = forms.fields_of(definition.get("inputSchema"))
            keys = await self.api.get("/api/keys")
            values: dict[str, Any] = {
                "tool": found,
                "fields": fields,
                "keys": keys,
                "key_id": "",
                "errors": {},
            }
            if form is not None:
                parsed, values["fields"] = forms.parse(fields, {k: str(v) for k, v in form.items()})
                values["key_id"] = key_id = str(form.get("key") or "")
                values["errors"] = parsed.errors
                if not parsed.errors:
                    # The call's outcome is what the page shows: nothing here changes the gateway.
                    values["outcome"] = await self._call(
                        request, key_id, found["exposed_name"], parsed.arguments
                    )
            return values

        return await self.page(request, session, "try.html", shown)

    async def _call(
        self, request: Request, key_id: str, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """One tools/call under a key's view (none: the gateway's), as a client's would run."""
        # A trace of our own, so the page can name the trace id the audit records it under.
        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        if self.handler is None:
            return {"error": "this edge does not run calls from the console", "trace_id": trace_id}
        view = self.catalog().view_of("", key_id)
        if view is None:
            return {"error": f"the key {key_id!r} sees no tools now", "trace_id": trace_id}
        client = request.client
        sender = Sender(address=client.host if client else "", port=client.port if client else 0)
        caller = Session("", CLIENT_NAME, key_id, 0, "")
        ctx = CallContext(caller, f"console-{trace_id[:8]}", view, sender=sender, operator_approves=True)
        params = {"name": name, "arguments": arguments, "_meta": {"traceparent": traceparent}}
        late = {"error": f"no answer within {TRY_SECONDS:.0f} s", "trace_id": trace_id}
        try:
            opened = await self.handler.open_call(ctx, params)
            answer = await result_within(opened, TRY_SECONDS)
        except EdgeError as exc:
            return {"error": exc.message, "trace_id": trace_id}
        if answer is None:
            return late
        result = orjson.loads(answer)
        return {
            "result": orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(),
            "is_error": bool(result.get("isError")),
            "trace_id": trace_id,
        }


async def result_within(call: Call, seconds: float) -> bytes | None:
    """The call's result, or None once it ran `seconds`: then it is cancelled through the call
    (its RPC), never by cutting off the task awaiting it (grpc/grpc#43360, see calls.py), and
    awaited to its end."""
    late = False

    async def watch() -> None:
        nonlocal late
        await anyio.sleep(seconds)
        late = True
        call.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            answer: bytes | None = await call.result()
        except EdgeError:
            if not late:
                raise
            answer = None  # how the cancelled call ended
        finally:
            tg.cancel_scope.cancel()
    return None if late else answer
