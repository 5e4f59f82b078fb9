"""connector: the MCP client side, one live session per downstream server."""

import os

# The connector forks stdio servers while gRPC threads run; gRPC's fork handlers
# only warn about that, on every spawn. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
