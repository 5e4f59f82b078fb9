"""Generated gRPC and event stubs (`make protos`); the sources are in protos/mcpgw/v1."""

from services.contracts.mcpgw.v1 import (
    connector_pb2,
    connector_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
)

__all__ = ["connector_pb2", "connector_pb2_grpc", "events_pb2", "registry_pb2", "registry_pb2_grpc"]
