"""The tools page: every server's tools with their schemas, turning tools on and off, and the
blocklist."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.edge.console import forms
from services.edge.console.api import path
from services.edge.console.base import Pages
from services.edge.console.session import ConsoleSession


class ToolPages(Pages):
    """The tools list, its on/off toggles and the blocklist form."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui/tools", page(self.tools)),
            Route("/ui/tools/toggle", page(self.toggle_tool), methods=["POST"]),
            Route("/ui/blocklist", page(self.set_blocklist), methods=["POST"]),
        ]

    async def _listing(self) -> dict[str, Any]:
        listed = await self.api.get("/api/tools")
        definitions = self.definitions()
        blocklist = await self.api.get("/api/blocklist")
        shown = [
            {
                **tool,
                # The catalog holds enabled tools only: a disabled one's schema is not at hand.
                "schema": orjson.dumps(
                    definitions[(tool["server"], tool["name"])].get("inputSchema", {}),
                    option=orjson.OPT_INDENT_2,
                ).decode()
                if (tool["server"], tool["name"]) in definitions
                else None,
                "try": "/ui/try?" + urlencode({"server": tool["server"], "tool": tool["name"]}),
            }
            for tool in listed
        ]
        return {"tools": shown, "blocklist": "\n".join(blocklist["patterns"])}

    async def tools(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        return await self.page(request, session, "tools.html", self._listing)

    async def toggle_tool(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        assert form is not None
        server, tool = str(form.get("server") or ""), str(form.get("tool") or "")
        enabled = form.get("enabled") == "true"
        await self.api.send("PUT", path("api", "tools", server, tool), {"enabled": enabled})
        return RedirectResponse("/ui/tools", 303)

    async def set_blocklist(
        self, request: Request, session: ConsoleSession, form: FormData | None
    ) -> Response:
        assert form is not None
        patterns = forms.lines(str(form.get("patterns") or ""))
        await self.api.send("PUT", "/api/blocklist", {"patterns": patterns})
        return RedirectResponse("/ui/tools", 303)
