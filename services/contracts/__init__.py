"""Generated gRPC and event stubs (`make protos`); the sources are in protos/mcpgw/v1."""

from services.contracts.mcpgw.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    connector_pb2,
    connector_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
)

__all__ = [
    "audit_pb2",
    "audit_pb2_grpc",
    "connector_pb2",
    "connector_pb2_grpc",
    "events_pb2",
    "registry_pb2",
    "registry_pb2_grpc",
]
