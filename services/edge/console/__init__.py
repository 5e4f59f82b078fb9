"""The admin console at `/ui`: server-rendered pages over the management API, served while
someone can sign in (the admin token, or the OpenID Connect provider for the console's admins
and viewers), every asset a file of this package."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from services.edge.admin import Guesses
from services.edge.catalog import Catalog
from services.edge.console.api import AdminApi
from services.edge.console.pages import Console
from services.edge.console.session import ConsoleSessions
from services.edge.console.signouts import SignOuts
from services.edge.console.sso import ConsoleSso, people
from services.edge.identity.oidc import OpenIDProvider
from services.edge.protocol import McpHandler

PREFIX = "/ui"


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def create_console(
    admin_api: ASGIApp,
    admin_token: str,
    console_token: str,
    session_secret: str,
    catalog: Callable[[], Catalog],
    handler: McpHandler | None,
    provider: OpenIDProvider | None = None,
    admins: str = "",
    viewers: str = "",
    public_url: str = "",
    guesses: Guesses | None = None,
    signouts: SignOuts | None = None,
) -> ASGIApp | None:
    """The console's ASGI app, or None (off) when no one could sign in: no admin token, and
    no provider with console admins or viewers. It calls the API with `console_token`."""
    sessions = ConsoleSessions(admin_token, session_secret, public_url=public_url, guesses=guesses)
    if signouts is not None:
        # A sign-out on any edge ends the session on this one too.
        signouts.tell(sessions.ended)
        sessions.announce = signouts.publish
    sso = None
    if provider is not None and (admins or viewers):
        sso = ConsoleSso(provider, sessions.signer, people(admins), people(viewers), public_url)
    if not admin_token and sso is None:
        return None
    api = AdminApi(admin_api, console_token)
    return Console(api, sessions, catalog, handler, sso, token_sign_in=bool(admin_token)).app()
