"""The tool groups page: the groups with their create form, and removing one."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.edge.console import forms
from services.edge.console.api import path
from services.edge.console.base import Pages
from services.edge.console.session import ConsoleSession


class GroupPages(Pages):
    """Creating and removing tool groups."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui/groups", page(self.groups), methods=["GET"]),
            Route("/ui/groups", page(self.create_group), methods=["POST"]),
            Route("/ui/groups/{name}/remove", page(self.remove_group), methods=["POST"]),
        ]

    async def _listing(self, form: FormData | None) -> dict[str, Any]:
        return {
            "groups": await self.api.get("/api/groups"),
            "catalog": self.tool_choices(forms.chosen(form, "tools")),
            "form": form or {},
            "chosen": forms.chosen(form, "tools"),
        }

    async def groups(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        return await self.page(request, session, "groups.html", lambda: self._listing(form))

    async def create_group(
        self, request: Request, session: ConsoleSession, form: FormData | None
    ) -> Response:
        assert form is not None
        body = {
            "name": str(form.get("name") or "").strip(),
            "description": str(form.get("description") or "").strip(),
            "tools": forms.selections([str(v) for v in form.getlist("tools")]),
        }

        async def create() -> Response:
            await self.api.send("POST", "/api/groups", body)
            return RedirectResponse("/ui/groups", 303)

        return await self.page(request, session, "groups.html", lambda: self._listing(form), create)

    async def remove_group(
        self, request: Request, session: ConsoleSession, _form: FormData | None
    ) -> Response:
        await self.api.send("DELETE", path("api", "groups", request.path_params["name"]))
        return RedirectResponse("/ui/groups", 303)
