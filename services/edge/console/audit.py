"""The audit pages: the records, filtered and paged, and one record whole."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.edge.console.api import ApiFailure
from services.edge.console.base import Pages
from services.edge.console.session import ConsoleSession

FILTERS = ("key", "server", "tool", "outcome", "since", "until")


class AuditPages(Pages):
    """The audit log, as the management API's `/api/audit` pages it."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui/audit", page(self.audit)),
            Route("/ui/audit/{seq:int}", page(self.audit_record)),
        ]

    async def audit(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        query = request.query_params
        filters = {name: query.get(name, "") for name in FILTERS}
        params = {**filters, "cursor": query.get("cursor", ""), "limit": 100}

        async def shown() -> dict[str, Any]:
            error = None
            page: dict[str, Any] = {"records": [], "next_cursor": None}
            try:
                page = await self.api.get("/api/audit", params)
            except ApiFailure as exc:
                # Filters the API refuses are the reading's error: the page shows them, with 200.
                if exc.status != 422:
                    raise
                error = exc
            more = None
            if page["next_cursor"] is not None:
                more = "/ui/audit?" + urlencode({**filters, "cursor": page["next_cursor"]})
            return {"records": page["records"], "filters": filters, "more": more, "error": error}

        # htmx asks for the rows alone, to append the next page.
        template = "audit_rows.html" if request.headers.get("hx-request") else "audit.html"
        return await self.page(request, session, template, shown)

    async def audit_record(
        self, request: Request, session: ConsoleSession, _form: FormData | None
    ) -> Response:
        seq = int(request.path_params["seq"])

        async def shown() -> dict[str, Any]:
            page = await self.api.get("/api/audit", {"cursor": str(max(0, seq - 1)), "limit": 1})
            records = [r for r in page["records"] if r["seq"] == seq]
            if not records:
                raise ApiFailure(404, f"No audit record {seq}.")
            record = records[0]
            return {"record": record, "text": orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()}

        return await self.page(request, session, "audit_record.html", shown)
