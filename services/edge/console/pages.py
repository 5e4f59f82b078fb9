"""The console's pages under `/ui`: each reads and changes the gateway through the management
API (`api.py`), and runs "try it" calls through the handler every MCP transport uses."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.edge.calls import Call
from services.edge.catalog import Catalog
from services.edge.console import forms
from services.edge.console.api import AdminApi, ApiFailure, path
from services.edge.console.charts import charts
from services.edge.console.session import (
    COOKIE,
    COOKIE_PATH,
    CSRF_FIELD,
    SESSION_SECONDS,
    ConsoleAuthError,
    ConsoleSession,
    ConsoleSessions,
    check_change,
    is_secure,
    same_origin,
)
from services.edge.console.sso import CALLBACK_PATH, NONCE_COOKIE, NONCE_PATH, STATE_SECONDS, ConsoleSso
from services.edge.errors import EdgeError
from services.edge.identity.oidc import SignInError
from services.edge.protocol import CallContext, McpHandler
from services.edge.records import Sender
from services.edge.sessions import Session

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
CLIENT_NAME = "mcpgw-console"
# What a "try it" call may take beyond its tool's own timeout before the page gives up.
TRY_SECONDS = 120.0
HEADERS = {
    "cache-control": "no-store",
    # Every script and style is a file of the package: nothing inline, nothing from elsewhere.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
FILTERS = ("key", "server", "tool", "outcome", "since", "until")
NAV = [
    ("/ui", "Overview"),
    ("/ui/servers", "Servers"),
    ("/ui/tools", "Tools"),
    ("/ui/keys", "Keys"),
    ("/ui/groups", "Groups"),
    ("/ui/audit", "Audit"),
]

Page = Callable[[Request, ConsoleSession, FormData | None], Awaitable[Response]]


def _with_headers(app: ASGIApp) -> ASGIApp:
    """The console's security headers on every answer but the static files'."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("path", "").startswith("/ui/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and not static:
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, sending)

    return wrapped


class Console:
    """The pages, over the management API, the edge's catalog and its MCP handler."""

    def __init__(
        self,
        api: AdminApi,
        sessions: ConsoleSessions,
        catalog: Callable[[], Catalog],
        handler: McpHandler | None,
        sso: ConsoleSso | None = None,
        token_sign_in: bool = True,
    ) -> None:
        self.api, self.sessions, self.catalog, self.handler = api, sessions, catalog, handler
        self.sso, self.token_sign_in = sso, token_sign_in
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # A name as one segment of a URL path.
        self.templates.filters["segment"] = lambda name: quote(str(name), safe="")

    # Rendering and the checks every page passes

    def render(
        self,
        request: Request,
        template: str,
        session: ConsoleSession | None,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        body = self.templates.get_template(template).render(
            nav=NAV,
            path=request.url.path,
            session=session,
            csrf_field=CSRF_FIELD,
            **values,
        )
        return HTMLResponse(body, status)

    def signed_in(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page for signed-in operators; a POST also passes the Origin and CSRF checks."""

        async def serve(request: Request) -> Response:
            session = self.sessions.session_of(request.cookies.get(COOKIE))
            if session is None:
                if request.method == "GET":
                    return RedirectResponse("/ui/login?" + urlencode({"next": request.url.path}), 303)
                return self.render(request, "error.html", None, 401, message="Sign in first.")
            form = None
            try:
                if request.method == "POST":
                    form = await request.form()
                    csrf = form.get(CSRF_FIELD)
                    check_change(self.sessions, session, request, csrf if isinstance(csrf, str) else None)
                    if session.read_only and request.url.path != "/ui/logout":
                        raise ConsoleAuthError(
                            403, "You are signed in read-only: ask an admin to change this."
                        )
                return await page(request, session, form)
            except ConsoleAuthError as exc:
                return self.render(request, "error.html", session, exc.status, message=exc.message)
            except ApiFailure as exc:
                return self.render(request, "error.html", session, exc.status, message=exc.message)

        return serve

    # Sign-in

    async def login(self, request: Request) -> Response:
        wanted = request.query_params.get("next", "/ui")
        target = wanted if wanted.startswith("/ui") and not wanted.startswith("//") else "/ui"
        if request.method == "GET":
            return self.render(request, "login.html", None, target=target, error=None, **self._sign_ins())
        form = await request.form()
        token = form.get("token")
        target = str(form.get("next") or "/ui")
        if not target.startswith("/ui"):
            target = "/ui"
        if not same_origin(request, self.sessions.public_url):
            return self.render(
                request,
                "login.html",
                None,
                403,
                target=target,
                error="Origin check failed.",
                **self._sign_ins(),
            )
        if not isinstance(token, str) or not self.sessions.token_matches(token):
            # Never the token itself: only that a sign-in failed, and from where.
            client = request.client.host if request.client else "?"
            log.warning("console sign-in refused from %s", client)
            return self.render(
                request,
                "login.html",
                None,
                401,
                target=target,
                error="That is not the admin token.",
                **self._sign_ins(),
            )
        _session, cookie = self.sessions.issue()
        return _signed_in(RedirectResponse(target, 303), request, cookie, self.sessions.public_url)

    def _sign_ins(self) -> dict[str, Any]:
        return {"token_sign_in": self.token_sign_in, "provider": self.sso.name if self.sso else None}

    async def sso_start(self, request: Request) -> Response:
        """Off to the provider (a POST from the sign-in page, so no other site starts one)."""
        if self.sso is None:
            return self.render(request, "error.html", None, 404, message="No provider is set up.")
        form = await request.form()
        target = str(form.get("next") or "/ui")
        if not same_origin(request, self.sessions.public_url):
            return self.render(request, "error.html", None, 403, message="Origin check failed.")
        try:
            url, nonce = await self.sso.start(request, target if target.startswith("/ui") else "/ui")
        except SignInError as exc:
            return self.render(request, "error.html", None, 502, message=f"Signing in failed: {exc}")
        # A page that navigates on, not a 303: the console's CSP (`form-action 'self'`) stops a
        # form whose answer redirects to another origin, but not a navigation the page starts.
        answer = self.render(request, "to_provider.html", None, url=url, provider=self.sso.name)
        # Lax: the provider sends the browser back with a cross-site navigation.
        answer.set_cookie(
            NONCE_COOKIE,
            nonce,
            max_age=STATE_SECONDS,
            path=NONCE_PATH,
            httponly=True,
            samesite="lax",
            secure=is_secure(request, self.sessions.public_url),
        )
        return answer

    async def sso_callback(self, request: Request) -> Response:
        if self.sso is None:
            return self.render(request, "error.html", None, 404, message="No provider is set up.")
        try:
            signed_in = await self.sso.finish(request)
        except SignInError as exc:
            log.warning("console sign-in with the provider refused: %s", exc)
            answer = self.render(request, "error.html", None, 403, message=f"Signing in failed: {exc}.")
            answer.delete_cookie(NONCE_COOKIE, path=NONCE_PATH)
            return answer
        _session, cookie = self.sessions.issue(role=signed_in.role, who=signed_in.who)
        # A page, not a redirect: the browser arrived cross-site, and a Strict cookie set now
        # is sent only on a navigation this origin starts (the page's own refresh).
        answer = self.render(request, "signed_in.html", None, target=signed_in.target, who=signed_in.who)
        answer.delete_cookie(NONCE_COOKIE, path=NONCE_PATH)
        return _signed_in(answer, request, cookie, self.sessions.public_url)

    async def logout(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        self.sessions.end(session)
        answer = RedirectResponse("/ui/login", 303)
        answer.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return answer

    # Overview

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
        return self.render(request, "overview.html", session, **await self.overview_data())

    async def overview_live(self, request: Request, session: ConsoleSession, _f: FormData | None) -> Response:
        return self.render(request, "overview_live.html", session, **await self.overview_data())

    # Servers

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

    async def servers(
        self,
        request: Request,
        session: ConsoleSession,
        form: FormData | None,
        status: int = 200,
        error: ApiFailure | None = None,
    ) -> Response:
        listed = await self.api.get("/api/servers")
        return self.render(
            request,
            "servers.html",
            session,
            status,
            servers=listed,
            counts=self._counts(),
            form=form or {},
            error=error,
        )

    async def add_server(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        assert form is not None
        text = {k: str(form.get(k) or "").strip() for k in form}
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
            failure = ApiFailure(422, str(exc), "headers")
            return await self.servers(request, session, form, 422, failure)
        if text.get("tool_execution_timeout"):
            config["tool_execution_timeout"] = text["tool_execution_timeout"]
        if text.get("price"):
            config["tool_pricing"] = {"*": _number_or_text(text["price"])}
        try:
            await self.api.send("POST", "/api/servers", config)
        except ApiFailure as exc:
            if exc.status not in (409, 422):
                raise
            field = "price" if (exc.field or "").startswith("tool_pricing") else exc.field
            failure = ApiFailure(exc.status, exc.message, field)
            return await self.servers(request, session, form, exc.status, failure)
        return RedirectResponse("/ui/servers", 303)

    async def _server(self, name: str) -> dict[str, Any]:
        for server in await self.api.get("/api/servers"):
            if server["config"].get("name") == name:
                return dict(server)
        raise ApiFailure(404, f"No server is named {name!r}.")

    async def server(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        name = request.path_params["name"]
        server = await self._server(name)
        error = None
        text = orjson.dumps(server["config"], option=orjson.OPT_INDENT_2).decode()
        if form is not None:
            text = str(form.get("config") or "")
            try:
                config = orjson.loads(text)
                await self.api.send("PUT", path("api", "servers", name), config)
                return RedirectResponse(path("ui", "servers", name), 303)
            except orjson.JSONDecodeError as exc:
                error = ApiFailure(422, f"not JSON: {exc}", "config")
            except ApiFailure as exc:
                if exc.status not in (409, 422):
                    raise
                error = exc
        return self.render(
            request,
            "server.html",
            session,
            200 if error is None else 422,
            server=server,
            config_text=text,
            counts=self._counts().get(name, {}),
            error=error,
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

    # Tools

    def _definitions(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each enabled tool's definition as its server sent it (disabled tools have none here)."""
        return {
            (entry.server, entry.name): orjson.loads(entry.definition_json)
            for entry in self.catalog().snapshot.tools
        }

    async def tools(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        listed = await self.api.get("/api/tools")
        definitions = self._definitions()
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
        return self.render(
            request, "tools.html", session, tools=shown, blocklist="\n".join(blocklist["patterns"])
        )

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

    async def try_tool(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        source = form if form is not None else request.query_params
        server, tool = str(source.get("server") or ""), str(source.get("tool") or "")
        listed = await self.api.get("/api/tools", {"server": server})
        found = next((t for t in listed if t["name"] == tool), None)
        if found is None:
            raise ApiFailure(404, f"No tool {tool!r} on server {server!r}.")
        definition = self._definitions().get((server, tool), {})
        fields = forms.fields_of(definition.get("inputSchema"))
        keys = await self.api.get("/api/keys")
        values: dict[str, Any] = {"tool": found, "fields": fields, "keys": keys, "key_id": "", "errors": {}}
        if form is not None:
            parsed, values["fields"] = forms.parse(fields, {k: str(v) for k, v in form.items()})
            values["key_id"] = key_id = str(form.get("key") or "")
            values["errors"] = parsed.errors
            if not parsed.errors:
                values["outcome"] = await self._call(request, key_id, found["exposed_name"], parsed.arguments)
        return self.render(request, "try.html", session, **values)

    async def _call(
        self, request: Request, key_id: str, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """One tools/call under a key's view (none: the gateway's), as a client's would run."""
        # A trace of our own, so the page can name the trace id the audit records it under.
        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        if self.handler is None:
            return {"error": "this edge does not run calls from the console", "trace_id": trace_id}
        view = self.catalog().view_of("", key_id)
        if view is None:
            return {"error": f"the key {key_id!r} sees no tools now", "trace_id": trace_id}
        client = request.client
        sender = Sender(address=client.host if client else "", port=client.port if client else 0)
        caller = Session("", CLIENT_NAME, key_id, 0, "")
        ctx = CallContext(caller, f"console-{trace_id[:8]}", view, sender=sender, operator_approves=True)
        params = {"name": name, "arguments": arguments, "_meta": {"traceparent": traceparent}}
        late = {"error": f"no answer within {TRY_SECONDS:.0f} s", "trace_id": trace_id}
        try:
            opened = await self.handler.open_call(ctx, params)
            answer = await result_within(opened, TRY_SECONDS)
        except EdgeError as exc:
            return {"error": exc.message, "trace_id": trace_id}
        if answer is None:
            return late
        result = orjson.loads(answer)
        return {
            "result": orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(),
            "is_error": bool(result.get("isError")),
            "trace_id": trace_id,
        }

    # Keys and groups

    def _catalog_tools(self, chosen: set[str] | frozenset[str] = frozenset()) -> list[Any]:
        """The picker's choices: each server's tools, by the names its config knows them, and
        the `chosen` ones the catalog lacks now (marked so), which saving the form keeps."""
        listed = ((entry.server, entry.name) for entry in self.catalog().snapshot.tools)
        return forms.choices(listed, set(chosen))

    def _key_body(self, form: FormData) -> dict[str, Any]:
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
                "request_max_limit": _number_or_text(text["rate_limit.request_max_limit"]),
                "request_reset_duration": text.get("rate_limit.request_reset_duration") or "1m",
            }
        if text.get("budget.max_limit"):
            body["budget"] = {
                "max_limit": _number_or_text(text["budget.max_limit"]),
                "reset_duration": text.get("budget.reset_duration") or "1M",
            }
        return body

    async def keys(
        self,
        request: Request,
        session: ConsoleSession,
        form: FormData | None,
        status: int = 200,
        error: ApiFailure | None = None,
    ) -> Response:
        listed = await self.api.get("/api/keys")
        groups = await self.api.get("/api/groups")
        return self.render(
            request,
            "keys.html",
            session,
            status,
            keys=listed,
            groups=groups,
            catalog=self._catalog_tools(_chosen(form, "tools")),
            form=form or {},
            chosen=_chosen(form, "tools"),
            chosen_groups=_chosen(form, "groups"),
            error=error,
        )

    async def create_key(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        assert form is not None
        try:
            issued = await self.api.send("POST", "/api/keys", self._key_body(form))
        except ApiFailure as exc:
            if exc.status not in (409, 422):
                raise
            return await self.keys(request, session, form, exc.status, exc)
        return self.render(request, "secret.html", session, key=issued, rotated=False)

    async def key(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        key_id = request.path_params["key_id"]
        error = None
        if form is not None:
            body = self._key_body(form)
            try:
                await self.api.send("PATCH", path("api", "keys", key_id), body)
                return RedirectResponse(path("ui", "keys", key_id), 303)
            except ApiFailure as exc:
                if exc.status != 422:
                    raise
                error = exc
        key = await self.api.get(path("api", "keys", key_id))
        view = self.catalog().view_of("", key_id)
        sees = sorted(view.tool_routes) if view is not None else []
        groups = await self.api.get("/api/groups")
        chosen = forms.picked(key["mcp_configs"]) if form is None else _chosen(form, "tools")
        return self.render(
            request,
            "key.html",
            session,
            200 if error is None else 422,
            key=key,
            sees=sees,
            groups=groups,
            catalog=self._catalog_tools(chosen),
            form=_key_form(key) if form is None else form,
            chosen=chosen,
            chosen_groups=set(key["groups"]) if form is None else _chosen(form, "groups"),
            error=error,
        )

    async def key_action(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        key_id, action = request.path_params["key_id"], request.path_params["action"]
        if action == "rotate":
            issued = await self.api.send("POST", path("api", "keys", key_id, "rotate"))
            return self.render(request, "secret.html", session, key=issued, rotated=True)
        if action == "revoke":
            await self.api.send("DELETE", path("api", "keys", key_id))
            return RedirectResponse("/ui/keys", 303)
        raise ApiFailure(404, f"No action {action!r}.")

    async def groups(
        self,
        request: Request,
        session: ConsoleSession,
        form: FormData | None,
        status: int = 200,
        error: ApiFailure | None = None,
    ) -> Response:
        return self.render(
            request,
            "groups.html",
            session,
            status,
            groups=await self.api.get("/api/groups"),
            catalog=self._catalog_tools(_chosen(form, "tools")),
            form=form or {},
            chosen=_chosen(form, "tools"),
            error=error,
        )

    async def create_group(
        self, request: Request, session: ConsoleSession, form: FormData | None
    ) -> Response:
        assert form is not None
        body = {
            "name": str(form.get("name") or "").strip(),
            "description": str(form.get("description") or "").strip(),
            "tools": forms.selections([str(v) for v in form.getlist("tools")]),
        }
        try:
            await self.api.send("POST", "/api/groups", body)
        except ApiFailure as exc:
            if exc.status not in (409, 422):
                raise
            return await self.groups(request, session, form, exc.status, exc)
        return RedirectResponse("/ui/groups", 303)

    async def remove_group(
        self, request: Request, session: ConsoleSession, _form: FormData | None
    ) -> Response:
        await self.api.send("DELETE", path("api", "groups", request.path_params["name"]))
        return RedirectResponse("/ui/groups", 303)

    # Audit

    async def audit(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        query = request.query_params
        filters = {name: query.get(name, "") for name in FILTERS}
        params = {**filters, "cursor": query.get("cursor", ""), "limit": 100}
        error = None
        page: dict[str, Any] = {"records": [], "next_cursor": None}
        try:
            page = await self.api.get("/api/audit", params)
        except ApiFailure as exc:
            if exc.status != 422:
                raise
            error = exc
        more = None
        if page["next_cursor"] is not None:
            more = "/ui/audit?" + urlencode({**filters, "cursor": page["next_cursor"]})
        template = "audit_rows.html" if request.headers.get("hx-request") else "audit.html"
        return self.render(
            request, template, session, records=page["records"], filters=filters, more=more, error=error
        )

    async def audit_record(
        self, request: Request, session: ConsoleSession, _form: FormData | None
    ) -> Response:
        seq = int(request.path_params["seq"])
        page = await self.api.get("/api/audit", {"cursor": str(max(0, seq - 1)), "limit": 1})
        records = [r for r in page["records"] if r["seq"] == seq]
        if not records:
            raise ApiFailure(404, f"No audit record {seq}.")
        record = records[0]
        return self.render(
            request,
            "audit_record.html",
            session,
            record=record,
            text=orjson.dumps(record, option=orjson.OPT_INDENT_2).decode(),
        )

    def app(self) -> ASGIApp:
        page = self.signed_in
        routes = [
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/logout", page(self.logout), methods=["POST"]),
            Route("/ui/oidc", self.sso_start, methods=["POST"]),
            Route(CALLBACK_PATH, self.sso_callback),
            Route("/ui", page(self.overview)),
            Route("/ui/", page(self.overview)),
            Route("/ui/overview/live", page(self.overview_live)),
            Route("/ui/servers", page(self.servers), methods=["GET"]),
            Route("/ui/servers", page(self.add_server), methods=["POST"]),
            Route("/ui/servers/{name}", page(self.server), methods=["GET", "POST"]),
            Route("/ui/servers/{name}/{action}", page(self.server_action), methods=["POST"]),
            Route("/ui/tools", page(self.tools)),
            Route("/ui/tools/toggle", page(self.toggle_tool), methods=["POST"]),
            Route("/ui/blocklist", page(self.set_blocklist), methods=["POST"]),
            Route("/ui/try", page(self.try_tool), methods=["GET", "POST"]),
            Route("/ui/keys", page(self.keys), methods=["GET"]),
            Route("/ui/keys", page(self.create_key), methods=["POST"]),
            Route("/ui/keys/{key_id}", page(self.key), methods=["GET", "POST"]),
            Route("/ui/keys/{key_id}/{action}", page(self.key_action), methods=["POST"]),
            Route("/ui/groups", page(self.groups), methods=["GET"]),
            Route("/ui/groups", page(self.create_group), methods=["POST"]),
            Route("/ui/groups/{name}/remove", page(self.remove_group), methods=["POST"]),
            Route("/ui/audit", page(self.audit)),
            Route("/ui/audit/{seq:int}", page(self.audit_record)),
            Mount("/ui/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return _with_headers(Starlette(routes=routes))


async def result_within(call: Call, seconds: float) -> bytes | None:
    """The call's result, or None once it ran `seconds`: then it is cancelled through the call
    (its RPC), never by cutting off the task awaiting it (grpc/grpc#43360, see calls.py), and
    awaited to its end."""
    late = False

    async def watch() -> None:
        nonlocal late
        await anyio.sleep(seconds)
        late = True
        call.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            answer: bytes | None = await call.result()
        except EdgeError:
            if not late:
                raise
            answer = None  # how the cancelled call ended
        finally:
            tg.cancel_scope.cancel()
    return None if late else answer


def _number_or_text(text: str) -> Any:
    """A number when the text is one, else the text (for the API to name what is wrong)."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


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


def _chosen(form: FormData | None, name: str) -> set[str]:
    return {str(v) for v in form.getlist(name)} if form is not None else set()


def _signed_in(answer: Response, request: Request, cookie: str, public_url: str) -> Response:
    """`answer`, setting the session cookie."""
    answer.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_secure(request, public_url),
    )
    return answer
