"""The virtual keys pages: the list with its create form, one key's settings, rotating and
revoking."""

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

# The cookie a new secret travels in from the POST to the page that shows it, and how long.
SECRET_COOKIE = "mcpgw_console_secret"  # noqa: S105 (a cookie's name)
SECRET_SECONDS = 120


class KeyPages(Pages):
    """Issuing, editing, rotating and revoking virtual keys."""

    def routes(self) -> list[Route]:
        page = self.signed_in
        return [
            Route("/ui/keys", page(self.keys), methods=["GET"]),
            Route("/ui/keys", page(self.create_key), methods=["POST"]),
            Route("/ui/keys/{key_id}", page(self.key), methods=["GET", "POST"]),
            Route("/ui/keys/{key_id}/secret", page(self.secret), methods=["GET"]),
            Route("/ui/keys/{key_id}/{action}", page(self.key_action), methods=["POST"]),
        ]

    async def _listing(self, form: FormData | None) -> dict[str, Any]:
        listed = await self.api.get("/api/keys")
        groups = await self.api.get("/api/groups")
        return {
            "keys": listed,
            "groups": groups,
            "catalog": self.tool_choices(forms.chosen(form, "tools")),
            "form": form or {},
            "chosen": forms.chosen(form, "tools"),
            "chosen_groups": forms.chosen(form, "groups"),
        }

    async def keys(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        return await self.page(request, session, "keys.html", lambda: self._listing(form))

    async def create_key(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        assert form is not None

        async def create() -> Response:
            issued = await self.api.send("POST", "/api/keys", _key_body(form))
            return self._show_once(request, session, issued, rotated=False)

        return await self.page(request, session, "keys.html", lambda: self._listing(form), create)

    async def key(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        key_id = request.path_params["key_id"]

        async def save() -> Response:
            assert form is not None
            await self.api.send("PATCH", path("api", "keys", key_id), _key_body(form))
            return RedirectResponse(path("ui", "keys", key_id), 303)

        async def shown() -> dict[str, Any]:
            key = await self.api.get(path("api", "keys", key_id))
            view = self.catalog().view_of("", key_id)
            sees = sorted(view.tool_routes) if view is not None else []
            groups = await self.api.get("/api/groups")
            chosen = forms.picked(key["mcp_configs"]) if form is None else forms.chosen(form, "tools")
            return {
                "key": key,
                "sees": sees,
                "groups": groups,
                "catalog": self.tool_choices(chosen),
                # A GET shows the key as it is; a refused POST, the form as it was sent.
                "form": _key_form(key) if form is None else form,
                "chosen": chosen,
                "chosen_groups": set(key["groups"]) if form is None else forms.chosen(form, "groups"),
            }

        change = save if form is not None else None
        return await self.page(
            request, session, "key.html", shown, change, refusals=(422,), refused_status=422
        )

    async def key_action(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        key_id, action = request.path_params["key_id"], request.path_params["action"]
        if action == "rotate":
            issued = await self.api.send("POST", path("api", "keys", key_id, "rotate"))
            return self._show_once(request, session, issued, rotated=True)
        if action == "revoke":
            await self.api.send("DELETE", path("api", "keys", key_id))
            return RedirectResponse("/ui/keys", 303)
        raise ApiFailure(404, f"No action {action!r}.")

    def _show_once(
        self, request: Request, session: ConsoleSession, issued: dict[str, Any], rotated: bool
    ) -> Response:
        """Off to the page that shows a new secret, which travels there sealed in a cookie of
        that page's path: reloading the page then neither creates nor rotates a key again."""
        shown = _secret_page(issued["id"])
        carried = orjson.dumps({"name": issued["name"], "secret": issued["secret"], "rotated": rotated})
        sealed = self.sessions.seal(session, carried.decode())
        answer = RedirectResponse(shown, 303)
        return self.sessions.set_cookie(answer, request, (SECRET_COOKIE, sealed), SECRET_SECONDS, shown)

    async def secret(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        """The new secret, shown once: the cookie that carried it goes with this answer."""
        key_id = request.path_params["key_id"]
        carried = self.sessions.unseal(session, request.cookies.get(SECRET_COOKIE))
        if carried is None:
            # Shown already (or never issued here): the key's page, which never shows it.
            return RedirectResponse(path("ui", "keys", key_id), 303)
        issued = orjson.loads(carried)
        key = {"id": key_id, "name": issued["name"], "secret": issued["secret"]}
        answer = self.render(request, "secret.html", session, key=key, rotated=issued["rotated"])
        answer.delete_cookie(SECRET_COOKIE, path=_secret_page(key_id), httponly=True, samesite="strict")
        return answer


def _secret_page(key_id: str) -> str:
    """The page that shows a key's new secret once; its cookie is set for this path alone."""
    return path("ui", "keys", key_id, "secret")


def _key_body(form: FormData) -> dict[str, Any]:
    """A key's fields as the API takes them, from the key form (the API validates them)."""
    text = {k: str(form.get(k) or "").strip() for k in form}
    body: dict[str, Any] = {
        "name": text.get("name", ""),
        "description": text.get("description", ""),
        "mcp_configs": forms.selections([str(v) for v in form.getlist("tools")]),
        "groups": [str(g) for g in form.getlist("groups")],
        "tool_mode": text.get("tool_mode") or "classic",
        "rate_limit": None,
        "budget": None,
    }
    if text.get("rate_limit.request_max_limit"):
        body["rate_limit"] = {
            "request_max_limit": forms.number_or_text(text["rate_limit.request_max_limit"]),
            "request_reset_duration": text.get("rate_limit.request_reset_duration") or "1m",
        }
    if text.get("budget.max_limit"):
        body["budget"] = {
            "max_limit": forms.number_or_text(text["budget.max_limit"]),
            "reset_duration": text.get("budget.reset_duration") or "1M",
        }
    return body


def _key_form(key: dict[str, Any]) -> dict[str, str]:
    """The key form's fields showing a key as it is."""
    shown = {"name": key["name"], "description": key["description"], "tool_mode": key["tool_mode"]}
    if key.get("rate_limit"):
        shown["rate_limit.request_max_limit"] = str(key["rate_limit"]["request_max_limit"])
        shown["rate_limit.request_reset_duration"] = key["rate_limit"]["request_reset_duration"]
    if key.get("budget"):
        shown["budget.max_limit"] = str(key["budget"]["max_limit"])
        shown["budget.reset_duration"] = key["budget"]["reset_duration"]
    return shown
