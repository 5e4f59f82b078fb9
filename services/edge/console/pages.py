"""The console's pages under `/ui`, assembled: each concern's module (sign-in, overview, servers,
tools, try it, keys, groups, audit) serves its own routes over the shared `base.Pages`."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from services.edge.catalog import Catalog
from services.edge.console.api import AdminApi
from services.edge.console.audit import AuditPages
from services.edge.console.base import HERE, Shared, templates, with_headers
from services.edge.console.groups import GroupPages
from services.edge.console.keys import KeyPages
from services.edge.console.overview import OverviewPages
from services.edge.console.servers import ServerPages
from services.edge.console.session import ConsoleSessions
from services.edge.console.signin import SignInPages
from services.edge.console.sso import ConsoleSso
from services.edge.console.tools import ToolPages
from services.edge.console.tryit import TryPages
from services.edge.protocol import McpHandler

STATIC = HERE / "static"


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
        self.templates = templates()
        shared = Shared(api, sessions, catalog, self.templates)
        self.sign_in = SignInPages(shared, sso, token_sign_in)
        self.overview = OverviewPages(shared)
        self.servers = ServerPages(shared)
        self.tools = ToolPages(shared)
        self.try_it = TryPages(shared, handler)
        self.keys = KeyPages(shared)
        self.groups = GroupPages(shared)
        self.audit = AuditPages(shared)

    def app(self) -> ASGIApp:
        # In the order Starlette tries them; no two concerns share a path.
        concerns = (
            self.sign_in,
            self.overview,
            self.servers,
            self.tools,
            self.try_it,
            self.keys,
            self.groups,
            self.audit,
        )
        routes: list[BaseRoute] = [route for pages in concerns for route in pages.routes()]
        routes.append(Mount("/ui/static", StaticFiles(directory=STATIC), name="static"))
        return with_headers(Starlette(routes=routes))
