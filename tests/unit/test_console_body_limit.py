"""The edge's /api and /ui read no more than the body limit, declared or not: a chunked body
(no Content-Length) is refused 413 once it passes the limit, and no more of it is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.edge.admission import Admission
from services.edge.app import EdgeComponents, create_app
from services.edge.console.pages import Console
from services.edge.console.session import ConsoleSessions

LIMIT = 64 * 1024
CHUNK = b"a" * 16 * 1024


async def echo_size(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def edge() -> Any:
    admin = Starlette(routes=[Route("/api/keys", echo_size, methods=["POST"])])
    console = Console(None, ConsoleSessions("admin-token", "secret"), None, None).app()  # type: ignore[arg-type]
    parts: dict[str, Any] = {name: None for name in EdgeComponents.__dataclass_fields__}
    parts.update(
        admission=Admission(LIMIT), admin=admin, console=console, execution=SimpleNamespace(serve=None)
    )
    return create_app(EdgeComponents(**parts))


class Sent:
    def __init__(self, chunks: int) -> None:
        self.chunks, self.sent = chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"token="
        for _ in range(self.chunks):
            self.sent += len(CHUNK)
            yield CHUNK


@pytest.mark.parametrize("path", ["/ui/login", "/api/keys"])
def test_a_chunked_body_over_the_limit_is_refused_413(path: str) -> None:
    async def main() -> None:
        transport = httpx2.ASGITransport(app=edge())
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = Sent(1000)  # 16 MiB, no Content-Length
            headers = {"content-type": "application/x-www-form-urlencoded", "origin": "http://127.0.0.1"}
            with anyio.fail_after(10):
                answer = await client.post(path, content=body, headers=headers)
            assert answer.status_code == 413, answer.text
            assert f"the limit is {LIMIT} bytes" in answer.json()["error"]["message"]
            assert body.sent <= LIMIT + 2 * len(CHUNK)

    anyio.run(main)


def test_a_chunked_body_within_the_limit_is_read_whole() -> None:
    async def main() -> None:
        transport = httpx2.ASGITransport(app=edge())
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.post("/api/keys", content=Sent(2))
            assert answer.status_code == 200 and answer.json() == {"size": 6 + 2 * len(CHUNK)}

    anyio.run(main)
