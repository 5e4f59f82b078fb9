"""Process-wide logging, and the W3C trace context the edge starts for each call."""

from __future__ import annotations

import logging
import secrets
import sys


def setup_logging(level: str, service: str) -> None:
    """One line per record on stderr, prefixed with the service name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK and HTTP clients log every request at INFO; that is noise on a gateway.
    for noisy in ("httpx", "httpx2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def new_trace() -> tuple[str, str]:
    """A fresh (trace id, span id) pair in W3C hex form."""
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"
