"""The servers pages: the list with its add form, one server's config, and its actions."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.edge.console import forms
from services.edge.console.api import ApiFailure, path
from services.edge.console.base import Pages
from services.edge.console.session import ConsoleSession


class ServerPages(Pages):
    """Adding, editing, reconnecting, disabling and removing the gateway's servers."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui/servers", page(self.servers), methods=["GET"]),
            Route("/ui/servers", page(self.add_server), methods=["POST"]),
            Route("/ui/servers/{name}", page(self.server), methods=["GET", "POST"]),
            Route("/ui/servers/{name}/{action}", page(self.server_action), methods=["POST"]),
        ]

    def _counts(self) -> dict[str, dict[str, int]]:
        snapshot = self.catalog().snapshot
        counts: dict[str, dict[str, int]] = {}
        for kind, entries in (
            ("prompts", snapshot.prompts),
            ("resources", [*snapshot.resources, *snapshot.resource_templates]),
        ):
            for entry in entries:
                counts.setdefault(entry.server, {}).setdefault(kind, 0)
                counts[entry.server][kind] += 1
        return counts

    async def _listing(self, form: FormData | None) -> dict[str, Any]:
        listed = await self.api.get("/api/servers")
        return {"servers": listed, "counts": self._counts(), "form": form or {}}

    async def servers(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        return await self.page(request, session, "servers.html", lambda: self._listing(form))

    async def add_server(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        assert form is not None
        text = {k: str(form.get(k) or "").strip() for k in form}

        async def add() -> Response:
            config: dict[str, Any] = {
                "name": text.get("name", ""),
                "connection_type": text.get("connection_type", "http"),
                "connection_string": text.get("connection_string", ""),
                "tools_to_execute": [t.strip() for t in text.get("tools_to_execute", "*").split(",")],
            }
            try:
                if text.get("headers"):
                    config["headers"] = forms.header_lines(str(form.get("headers")))
            except ValueError as exc:
                raise ApiFailure(422, str(exc), "headers") from exc
            if text.get("tool_execution_timeout"):
                config["tool_execution_timeout"] = text["tool_execution_timeout"]
            if text.get("price"):
                config["tool_pricing"] = {"*": forms.number_or_text(text["price"])}
            try:
                await self.api.send("POST", "/api/servers", config)
            except ApiFailure as exc:
                # The form's one price field is the API's tool_pricing: mark that field.
                if (exc.field or "").startswith("tool_pricing"):
                    raise ApiFailure(exc.status, exc.message, "price") from exc
                raise
            return RedirectResponse("/ui/servers", 303)

        return await self.page(request, session, "servers.html", lambda: self._listing(form), add)

    async def _server(self, name: str) -> dict[str, Any]:
        for server in await self.api.get("/api/servers"):
            if server["config"].get("name") == name:
                return dict(server)
        raise ApiFailure(404, f"No server is named {name!r}.")

    async def server(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        name = request.path_params["name"]
        # Read first: a server that is not there is a 404, never a PUT that adds it.
        server = await self._server(name)
        if form is None:
            text = orjson.dumps(server["config"], option=orjson.OPT_INDENT_2).decode()
        else:
            text = str(form.get("config") or "")

        async def save() -> Response:
            try:
                config = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ApiFailure(422, f"not JSON: {exc}", "config") from exc
            await self.api.send("PUT", path("api", "servers", name), config)
            return RedirectResponse(path("ui", "servers", name), 303)

        async def shown() -> dict[str, Any]:
            return {"server": server, "config_text": text, "counts": self._counts().get(name, {})}

        return await self.page(
            request, session, "server.html", shown, save if form is not None else None, refused_status=422
        )

    async def server_action(
        self, request: Request, session: ConsoleSession, form: FormData | None
    ) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action == "reconnect":
            await self.api.send("POST", path("api", "mcp", "client", name, "reconnect"))
        elif action in ("disable", "enable"):
            config = (await self._server(name))["config"]
            changed = {**config, "disabled": action == "disable"}
            await self.api.send("PUT", path("api", "servers", name), changed)
        elif action == "remove":
            await self.api.send("DELETE", path("api", "servers", name))
            return RedirectResponse("/ui/servers", 303)
        else:
            raise ApiFailure(404, f"No action {action!r}.")
        return RedirectResponse(path("ui", "servers", name), 303)
