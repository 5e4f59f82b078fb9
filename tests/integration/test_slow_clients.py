"""Clients that send their request headers a byte at a time are cut off at the header
deadline (408), while normal clients are served meanwhile."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import initialize, post
from tests.processes import service_tree, stdio_server

HEADER_TIMEOUT = 1.5
SLOW_CLIENTS = 20


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    env = {"MCPGW_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    with service_tree(tmp_path_factory.mktemp("slow"), [stdio_server("fixture", FIXTURE)], env=env) as (
        base,
    ):
        yield base, httpx2.URL(base).port or 80


def _dribble(port: int, started: float) -> tuple[float, bytes]:
    """Send headers a byte every 100 ms until the edge closes; when it did and what it said."""
    head = b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(0.1)
        answer = b""
        for byte in head:
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break  # still held: the test fails on the time, not on a hang
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            answer += chunk
            if not chunk:
                break
        return time.monotonic() - started, answer


def test_slow_headers_are_cut_off_at_the_deadline_while_others_are_served(edge: tuple[str, int]) -> None:
    base, port = edge
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(SLOW_CLIENTS) as pool:
        slow = [pool.submit(_dribble, port, started) for _ in range(SLOW_CLIENTS)]
        # Meanwhile a normal client is served.
        mcp = f"{base}/mcp"
        assert post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, initialize(mcp)).status_code == 200
        held = [future.result(timeout=30) for future in slow]
    for seconds, answer in held:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert HEADER_TIMEOUT - 0.2 <= seconds <= HEADER_TIMEOUT + 2.0, seconds


def test_an_idle_connection_that_never_sends_is_closed_too(edge: tuple[str, int]) -> None:
    _, port = edge
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 5) as sock:
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started <= HEADER_TIMEOUT + 2.0


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response off a kept-alive connection (it has a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head


def test_a_kept_alive_connection_idle_past_the_deadline_is_still_served(edge: tuple[str, int]) -> None:
    _, port = edge
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(request)
            assert _response(sock).startswith(b"HTTP/1.1 200")
            # Idle between requests is uvicorn's keep-alive (5 s), not the header deadline.
            time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(request)
        assert _response(sock).startswith(b"HTTP/1.1 200")
