"""A Streamable HTTP MCP server whose tools fail the way servers and networks do: invalid JSON,
an answer stream that breaks (resumable or not), an answer that never comes. GET /stats says
which resumptions and cancellations it saw."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from typing import Any

from aiohttp import web

TOOLS = {
    "ok": "Answers at once with its `text` argument.",
    "malformed": "Answers 200 application/json with a body that is not JSON.",
    "malformed_sse": "Answers with an event whose data is not JSON.",
    "closes": "Sends a priming event, then drops the connection; the stream cannot be resumed.",
    "resumable": "Sends a priming event and ends the stream; a GET with its Last-Event-ID gets the answer.",
    "stalls": "Never answers.",
}
RETRY_MILLISECONDS = 100
SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


def event(data: str, event_id: str | None = None, retry: int | None = None) -> bytes:
    """One event in wire form (data on one line: the JSON written here has no newlines)."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    if retry is not None:
        lines.append(f"retry: {retry}")
    lines.append(f"data: {data}" if data else "data:")
    return ("\n".join(lines) + "\n\n").encode()


def response(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


class FaultyServer:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        # Answers held back for a resuming GET, by the event id it resumes after.
        self._held: dict[str, dict[str, Any]] = {}
        self.resumed: list[str] = []
        self.cancelled: list[Any] = []

    async def post(self, request: web.Request) -> web.StreamResponse:
        try:
            message = json.loads(await request.read())
        except ValueError:
            error = {"code": -32700, "message": "Parse error"}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": error}, status=400)
        method, request_id = message.get("method"), message.get("id")
        if method is None or request_id is None:
            if method == "notifications/cancelled":
                self.cancelled.append(message.get("params", {}).get("requestId"))
            return web.Response(status=202)
        params = message.get("params") or {}
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": params.get("protocolVersion"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "faulty", "version": "1"},
            }
            return web.json_response(
                response(request_id, result), headers={"mcp-session-id": uuid.uuid4().hex}
            )
        if method == "ping":
            return web.json_response(response(request_id, {}))
        if method == "tools/list":
            tools = [
                {"name": name, "description": text, "inputSchema": {"type": "object"}}
                for name, text in TOOLS.items()
            ]
            return web.json_response(response(request_id, {"tools": tools}))
        if method == "tools/call":
            return await self.call(request, request_id, params.get("name"), params.get("arguments") or {})
        error = {"code": -32601, "message": f"Method not found: {method}"}
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "error": error})

    async def call(
        self, request: web.Request, request_id: Any, tool: object, arguments: dict[str, Any]
    ) -> web.StreamResponse:
        if tool not in TOOLS:
            error = {"code": -32602, "message": f"Unknown tool: {tool}"}
            return web.json_response({"jsonrpc": "2.0", "id": request_id, "error": error})
        answer = response(request_id, {"content": [{"type": "text", "text": arguments.get("text", tool)}]})
        if tool == "ok":
            return web.json_response(answer)
        if tool == "malformed":
            return web.Response(body=b'{"jsonrpc": "2.0", "id": ', content_type="application/json")
        if tool == "stalls":
            # The stall being simulated; the gateway's timeout is what ends the call.
            await asyncio.sleep(3600)
            return web.json_response(answer)
        stream = web.StreamResponse(headers=SSE_HEADERS)
        await stream.prepare(request)
        if tool == "malformed_sse":
            await stream.write(event('{"jsonrpc": "2.0", "id": ', f"m-{next(self._ids)}"))
            await stream.write_eof()
            return stream
        primed = f"{tool}-{next(self._ids)}"
        await stream.write(event("", primed, RETRY_MILLISECONDS))
        if tool == "closes":
            # Dropped, not ended: the client reads a broken chunked body.
            assert request.transport is not None
            request.transport.abort()
            return stream
        # "resumable": ended cleanly, its answer held for the GET that resumes after `primed`.
        self._held[primed] = answer
        await stream.write_eof()
        return stream

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Resume a held answer after its Last-Event-ID; no standalone stream (405) otherwise."""
        last = request.headers.get("last-event-id")
        if last is None:
            return web.Response(status=405)
        self.resumed.append(last)
        answer = self._held.pop(last, None)
        if answer is None:
            return web.Response(status=405)
        stream = web.StreamResponse(headers=SSE_HEADERS)
        await stream.prepare(request)
        await stream.write(event(json.dumps(answer), f"{last}-answer"))
        await stream.write_eof()
        return stream

    async def delete(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=405)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"resumed": self.resumed, "cancelled": self.cancelled})


def app() -> web.Application:
    server = FaultyServer()
    application = web.Application()
    application.router.add_post("/mcp", server.post)
    application.router.add_get("/mcp", server.get)
    application.router.add_delete("/mcp", server.delete)
    application.router.add_get("/stats", server.stats)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # A stalled handler ends when its client goes away, as a real server's work would; none holds up a stop.
    web.run_app(
        app(),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
