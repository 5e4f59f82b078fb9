"""The edge's client of the connector service: one request to a downstream as one gRPC call."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from services.contracts import connector_pb2, connector_pb2_grpc


class ConnectorUnavailableError(ConnectionError):
    """No connector answered."""


class ConnectorClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = connector_pb2_grpc.ConnectorStub(channel)

    async def call_tool(
        self,
        request: connector_pb2.CallToolRequest,
        traceparent: str,
        on_notification: Callable[[bytes], None] | None = None,
    ) -> connector_pb2.CallToolOutcome:
        """The call's outcome; with `on_notification`, the notifications sent before it go there."""
        metadata = (("traceparent", traceparent),)
        try:
            if on_notification is None:
                # Unary: the cheapest gRPC call there is, and most tool calls are this.
                outcome: connector_pb2.CallToolOutcome = await self._stub.CallTool(request, metadata=metadata)
                return outcome
            async for update in self._stub.StreamTool(request, metadata=metadata):
                if update.HasField("outcome"):
                    return update.outcome  # type: ignore[no-any-return]
                on_notification(update.notification_json)
        except grpc.aio.AioRpcError as exc:
            raise ConnectorUnavailableError(exc.details() or exc.code().name) from None
        raise ConnectorUnavailableError("the connector ended the call without an outcome")

    async def forward(
        self, server: str, method: str, params_json: bytes, traceparent: str
    ) -> connector_pb2.ForwardOutcome:
        """Any request other than tools/call, answered by the downstream named `server`."""
        request = connector_pb2.ForwardRequest(server=server, method=method, params_json=params_json)
        try:
            outcome: connector_pb2.ForwardOutcome = await self._stub.Forward(
                request, metadata=(("traceparent", traceparent),)
            )
        except grpc.aio.AioRpcError as exc:
            raise ConnectorUnavailableError(exc.details() or exc.code().name) from None
        return outcome
