"""The stack's floor: mcpgw's libraries in mcpgw's shape, with none of mcpgw's logic.

    python -m bench.floor_server edge --port P --connector HOST:PORT [--nats URL]
    python -m bench.floor_server connector --port P --downstream URL
    python -m bench.floor_server audit --nats URL

`edge` is uvicorn (httptools, uvloop) with a bare ASGI app: it answers initialize and
notifications itself and sends each tools/call over one grpc.aio `Calls` stream, batched
as mcpgw batches it. `connector` serves that stream and POSTs each call to the downstream
over an aiohttp pool. With `--nats`, the edge answers only once the call's event is stored
in JetStream (one publish per call, awaited) and `audit` consumes and acks the events.
What these processes cost per call is what any gateway built on this stack pays at least:
`make bench` loads it beside mcpgw (`--peers floor`), so the difference is mcpgw's own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import uuid
from typing import Any

import aiohttp
import grpc
import nats
import nats.js.errors
import orjson
import uvicorn
import uvloop
from nats.js.api import StreamConfig

from services.contracts import connector_pb2, connector_pb2_grpc
from services.rpc import CHANNEL_OPTIONS, SERVER_OPTIONS, Coalescer

SERVICE = "mcpgw.v1.Connector"
STREAM = "FLOOR"
SUBJECT = "floor.calls"
PROTOCOL_VERSION = "2025-06-18"
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": PROTOCOL_VERSION,
}
INITIALIZED = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "floor", "version": "1"},
}
Scope = dict[str, Any]


class Mux:
    """Calls to the connector over one `Calls` stream, every call ready at a write in one message."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._rpc = connector_pb2_grpc.ConnectorStub(channel).Calls()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[connector_pb2.CallToolOutcome]] = {}
        self._out: Coalescer[connector_pb2.MuxedCall] = Coalescer(
            lambda calls: self._rpc.write(connector_pb2.CallBatch(calls=calls))
        )
        self._tasks = [asyncio.create_task(self._out.run()), asyncio.create_task(self._read())]

    async def _read(self) -> None:
        async for batch in self._rpc:
            for muxed in batch.outcomes:
                self._pending.pop(muxed.id).set_result(muxed.outcome)

    def call(self, tool: str, arguments: bytes) -> asyncio.Future[connector_pb2.CallToolOutcome]:
        request = connector_pb2.CallToolRequest(server="echo", tool=tool, arguments_json=arguments)
        muxed = connector_pb2.MuxedCall(id=next(self._ids), request=request)
        outcome = asyncio.get_running_loop().create_future()
        self._pending[muxed.id] = outcome
        self._out.put(muxed)
        return outcome


class Edge:
    """The bare ASGI app: JSON-RPC in, the connector's result out, audited first with NATS."""

    def __init__(self, mux: Mux, js: Any | None) -> None:
        self._mux = mux
        self._js = js

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        if "id" not in request:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json")]
        if request["method"] == "initialize":
            headers.append((b"mcp-session-id", uuid.uuid4().hex.encode()))
            result: Any = INITIALIZED
        else:
            params = request["params"]
            outcome = await self._mux.call(params["name"], orjson.dumps(params.get("arguments", {})))
            result = orjson.loads(outcome.result.result_json)
            if self._js is not None:
                event = orjson.dumps({"tool": params["name"], "id": request["id"]})
                await self._js.publish(SUBJECT, event)
        answer = orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result})
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


class Connector:
    """Each call of a `Calls` stream POSTed to the downstream, its outcome batched back."""

    def __init__(self, downstream: str, http: aiohttp.ClientSession) -> None:
        self._downstream = downstream
        self._http = http
        self._ids = itertools.count(1)

    async def calls(self, batches: Any, context: grpc.aio.ServicerContext) -> None:
        out: Coalescer[connector_pb2.MuxedOutcome] = Coalescer(
            lambda outcomes: context.write(connector_pb2.OutcomeBatch(outcomes=outcomes))
        )
        tasks: set[asyncio.Task[None]] = set()

        async def one(muxed: connector_pb2.MuxedCall) -> None:
            call = {
                "jsonrpc": "2.0",
                "id": next(self._ids),
                "method": "tools/call",
                "params": {
                    "name": muxed.request.tool,
                    "arguments": orjson.loads(muxed.request.arguments_json),
                },
            }
            async with self._http.post(
                self._downstream, data=orjson.dumps(call), headers=HEADERS
            ) as response:
                answer = orjson.loads(await response.read())
            outcome = connector_pb2.CallToolOutcome(
                result=connector_pb2.ToolResult(result_json=orjson.dumps(answer["result"]))
            )
            out.put(connector_pb2.MuxedOutcome(id=muxed.id, outcome=outcome))

        writer = asyncio.create_task(out.run())
        async for batch in batches:
            for muxed in batch.calls:
                task = asyncio.create_task(one(muxed))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        writer.cancel()


async def edge(args: argparse.Namespace) -> None:
    js = None
    if args.nats:
        nc = await nats.connect(args.nats)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
    async with grpc.aio.insecure_channel(args.connector, options=CHANNEL_OPTIONS) as channel:
        app = Edge(Mux(channel), js)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=args.port, http="httptools", loop="none",
            lifespan="off", access_log=False, log_level="warning",
        )  # fmt: skip
        await uvicorn.Server(config).serve()


async def connector(args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        calls = grpc.stream_stream_rpc_method_handler(
            Connector(args.downstream, http).calls,
            request_deserializer=connector_pb2.CallBatch.FromString,
            response_serializer=connector_pb2.OutcomeBatch.SerializeToString,
        )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Calls": calls})])
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        await server.wait_for_termination()


async def audit(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.nats, max_reconnect_attempts=-1, allow_reconnect=True)
    js = nc.jetstream()
    while True:
        # The edge makes the stream; until then (or while JetStream is busy) try again.
        try:
            pull = await js.pull_subscribe(SUBJECT, durable="floor", stream=STREAM)
            break
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            print(f"floor audit: subscribing: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)
    while True:
        try:
            messages = await pull.fetch(512, timeout=1)
            for message in messages:
                await message.ack()
        except TimeoutError:  # nats' own, or asyncio's when a fetch's batch timed out
            continue
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            print(f"floor audit: fetching: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=("edge", "connector", "audit"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--connector", default="")
    parser.add_argument("--downstream", default="")
    parser.add_argument("--nats", default="")
    args = parser.parse_args()
    uvloop.run({"edge": edge, "connector": connector, "audit": audit}[args.role](args))


if __name__ == "__main__":
    main()
