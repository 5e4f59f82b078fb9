"""What every console page shares: the templates, the sign-in check each page passes, and the
one shape of a page (make the form's change, or fetch and render what the page shows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.edge.catalog import Catalog
from services.edge.console import forms
from services.edge.console.api import AdminApi, ApiFailure
from services.edge.console.session import (
    COOKIE,
    CSRF_FIELD,
    ConsoleAuthError,
    ConsoleSession,
    ConsoleSessions,
    check_change,
)

HERE = Path(__file__).parent
HEADERS = {
    "cache-control": "no-store",
    # Every script and style is a file of the package: nothing inline, nothing from elsewhere.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
NAV = [
    ("/ui", "Overview"),
    ("/ui/servers", "Servers"),
    ("/ui/tools", "Tools"),
    ("/ui/keys", "Keys"),
    ("/ui/groups", "Groups"),
    ("/ui/audit", "Audit"),
]

# A signed-in page: the request, its session, and the form a POST sent (None for a GET).
Page = Callable[[Request, ConsoleSession, FormData | None], Awaitable[Response]]
# What a page shows, as its template's values.
Fetch = Callable[[], Awaitable[dict[str, Any]]]
# The change a form asks for, answering where the browser goes next.
Change = Callable[[], Awaitable[Response]]


def templates() -> Environment:
    """The console's templates, autoescaped."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # A name as one segment of a URL path.
    environment.filters["segment"] = lambda name: quote(str(name), safe="")
    return environment


def with_headers(app: ASGIApp) -> ASGIApp:
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


@dataclass(frozen=True, slots=True)
class Shared:
    """What the console's pages all work with: the API, the sessions, the catalog, the templates."""

    api: AdminApi
    sessions: ConsoleSessions
    catalog: Callable[[], Catalog]
    templates: Environment


class Pages:
    """One concern's pages; its `routes` are what the console serves of it."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.api, self.sessions, self.catalog = shared.api, shared.sessions, shared.catalog

    def render(
        self,
        request: Request,
        template: str,
        session: ConsoleSession | None,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        body = self.shared.templates.get_template(template).render(
            nav=NAV,
            path=request.url.path,
            session=session,
            # Viewers see no form they could not submit.
            can_change=session is not None and not session.read_only,
            csrf_field=CSRF_FIELD,
            **values,
        )
        return HTMLResponse(body, status)

    async def page(
        self,
        request: Request,
        session: ConsoleSession,
        template: str,
        fetch: Fetch,
        change: Change | None = None,
        refusals: tuple[int, ...] = (409, 422),
        refused_status: int | None = None,
    ) -> Response:
        """Every page's shape: make the `change` a form asks for and answer what it answers;
        when there is none, or the API refuses it with one of `refusals`, render `template`
        with what `fetch` reads (after the refused change, as the form shows it) and the
        refusal as `error`, answering the refusal's status (or `refused_status`). A page whose
        reading itself may be refused names its own `error` among the fetched values."""
        error = None
        if change is not None:
            try:
                return await change()
            except ApiFailure as exc:
                if exc.status not in refusals:
                    raise
                error = exc
        status = 200 if error is None else refused_status or error.status
        return self.render(request, template, session, status, **{"error": error, **await fetch()})

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

    # The catalog, as several concerns' pages show it

    def definitions(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each enabled tool's definition as its server sent it (disabled tools have none here)."""
        return {
            (entry.server, entry.name): orjson.loads(entry.definition_json)
            for entry in self.catalog().snapshot.tools
        }

    def tool_choices(self, chosen: set[str] | frozenset[str] = frozenset()) -> list[Any]:
        """The picker's choices: each server's tools, by the names its config knows them, and
        the `chosen` ones the catalog lacks now (marked so), which saving the form keeps."""
        listed = ((entry.server, entry.name) for entry in self.catalog().snapshot.tools)
        return forms.choices(listed, set(chosen))
