"""The overview page: the last hour's calls, the busiest tools and keys, failing servers."""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.edge.console.base import Pages
from services.edge.console.charts import charts
from services.edge.console.session import ConsoleSession


class OverviewPages(Pages):
    """The overview, and its part the page refreshes live."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui", page(self.overview)),
            Route("/ui/", page(self.overview)),
            Route("/ui/overview/live", page(self.overview_live)),
        ]

    async def overview_data(self) -> dict[str, Any]:
        now = time.time()
        since = str(int(now - 3600))
        page = await self.api.get("/api/audit", {"since": since, "method": "tools/call", "limit": 1000})
        records = page["records"]
        by_tool = await self.api.get("/api/usage", {"since": since, "group_by": "server,tool"})
        by_key = await self.api.get("/api/usage", {"since": since, "group_by": "key"})
        servers = await self.api.get("/api/servers")
        names = {key["id"]: key["name"] for key in await self.api.get("/api/keys")}

        def top(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(rows, key=lambda r: -int(r["calls"]))[:5]

        return {
            "charts": charts(records, now),
            "calls": len(records),
            "capped": page["next_cursor"] is not None,
            "top_tools": top(by_tool["rows"]),
            "top_keys": [{**row, "name": names.get(row["key"], "")} for row in top(by_key["rows"])],
            "failing": [s for s in servers if s["state"] != "connected" and not s["config"].get("disabled")],
        }

    async def overview(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        return await self.page(request, session, "overview.html", self.overview_data)

    async def overview_live(self, request: Request, session: ConsoleSession, _f: FormData | None) -> Response:
        return await self.page(request, session, "overview_live.html", self.overview_data)
