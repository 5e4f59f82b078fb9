"""Signing in to the console (the admin token, or the OpenID Connect provider) and out."""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.edge.admin import TooManyGuessesError
from services.edge.console.base import Pages, Shared
from services.edge.console.session import (
    COOKIE,
    COOKIE_PATH,
    SESSION_SECONDS,
    ConsoleSession,
    same_origin,
)
from services.edge.console.sso import CALLBACK_PATH, NONCE_COOKIE, NONCE_PATH, STATE_SECONDS, ConsoleSso
from services.edge.identity.oidc import SignInError

log = logging.getLogger(__name__)


class SignInPages(Pages):
    """The sign-in page, the provider's round trip, and signing out."""

    def __init__(self, shared: Shared, sso: ConsoleSso | None, token_sign_in: bool) -> None:
        super().__init__(shared)
        self.sso, self.token_sign_in = sso, token_sign_in

    def routes(self) -> list[Route]:
        return [
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/logout", self.signed_in(self.logout), methods=["POST"]),
            Route("/ui/oidc", self.sso_start, methods=["POST"]),
            Route(CALLBACK_PATH, self.sso_callback),
        ]

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
        client = request.client.host if request.client else ""
        try:
            admitted = self.sessions.token_matches(client, token if isinstance(token, str) else "")
        except TooManyGuessesError as exc:
            log.warning("console sign-in from %s not checked: too many wrong tokens", client)
            answer = self.render(
                request,
                "login.html",
                None,
                429,
                target=target,
                error=f"Too many wrong tokens from this address: try again in {exc.retry_after} s.",
                **self._sign_ins(),
            )
            answer.headers["retry-after"] = str(exc.retry_after)
            return answer
        if not admitted:
            # Never the token itself: only that a sign-in failed, and from where.
            log.warning("console sign-in refused from %s", client or "?")
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
        return self._signed_in(RedirectResponse(target, 303), request, cookie)

    def _signed_in(self, answer: Response, request: Request, cookie: str) -> Response:
        """`answer`, setting the session cookie."""
        return self.sessions.set_cookie(answer, request, (COOKIE, cookie), SESSION_SECONDS, COOKIE_PATH)

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
        return self.sessions.set_cookie(
            answer, request, (NONCE_COOKIE, nonce), STATE_SECONDS, NONCE_PATH, samesite="lax"
        )

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
        return self._signed_in(answer, request, cookie)

    async def logout(self, request: Request, session: ConsoleSession, _form: FormData | None) -> Response:
        await self.sessions.sign_out(session)
        answer = RedirectResponse("/ui/login", 303)
        answer.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return answer
