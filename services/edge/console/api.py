"""The management API as the console calls it: in process, through the API's own routes, so a
form is validated and applied exactly as `/api/` would (one way to do each thing)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
from starlette.types import ASGIApp

ORIGIN = "http://mcpgw-console.internal"


def path(*segments: str) -> str:
    """A URL path of `segments`, each percent-quoted whole (a name's "/", "#" or "?" is part of
    it, not of the path's structure): path("api", "tools", "s", "a#b") == "/api/tools/s/a%23b"."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


class ApiFailure(Exception):
    """The API refused a request: its status, message and the field it named (if any)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class AdminApi:
    """Requests to the management API's ASGI app, under the admin token."""

    def __init__(self, app: ASGIApp, admin_token: str) -> None:
        self._client = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=ORIGIN,
            headers={"authorization": f"Bearer {admin_token}"},
            timeout=30,
        )

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        shown = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        return await self.send("GET", path, params=shown)

    async def send(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The answer's JSON (None for 204); ApiFailure for any other status than 2xx."""
        answer = await self._client.request(method, path, json=body, params=params)
        if answer.status_code == 204:
            return None
        try:
            value = answer.json()
        except ValueError:
            value = {}
        if answer.status_code >= 300:
            error = value.get("error", {}) if isinstance(value, dict) else {}
            message = error.get("message") or f"the API answered {answer.status_code}"
            raise ApiFailure(answer.status_code, str(message), error.get("field"))
        return value

    async def close(self) -> None:
        await self._client.aclose()
