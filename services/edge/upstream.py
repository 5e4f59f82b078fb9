"""The edge's client of the connector service: one tools/call as a gRPC stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from services.contracts import connector_pb2, connector_pb2_grpc


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """Exactly one of result_json or error is set."""

    result_json: bytes = b""
    is_error: bool = False
    error: connector_pb2.CallError | None = None


class ConnectorUnavailableError(ConnectionError):
    """No connector answered."""


class ConnectorClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = connector_pb2_grpc.ConnectorStub(channel)

    async def call_tool(
        self,
        start: connector_pb2.CallToolStart,
        traceparent: str,
        on_notification: Callable[[bytes], None] | None = None,
    ) -> CallOutcome:
        call = self._stub.CallTool(metadata=(("traceparent", traceparent),))
        try:
            await call.write(connector_pb2.CallToolInput(start=start))
            while (output := await call.read()) is not grpc.aio.EOF:
                kind = output.WhichOneof("kind")
                if kind == "result":
                    return CallOutcome(result_json=output.result.result_json, is_error=output.result.is_error)
                if kind == "error":
                    return CallOutcome(error=output.error)
                if kind == "notification_json" and on_notification is not None:
                    on_notification(output.notification_json)
        except grpc.aio.AioRpcError as exc:
            raise ConnectorUnavailableError(exc.details() or exc.code().name) from None
        finally:
            call.cancel()
        raise ConnectorUnavailableError("the connector ended the call without an outcome")
