"""The consent pages of the authorize step: the person presents a virtual key, or signs in
with the operator's OpenID Connect provider as the key naming them, sees what that identity
grants at the resource, and allows or denies; allowing mints the code the client redeems.
Server-rendered forms, so a headless client can submit them too.

A pending authorization is taken once, whichever answer it gets; the review page carries
a token signed over the request, the person and the key, so what is allowed is what was
shown. A provider sign-in comes back to `CALLBACK_PATH` on whichever edge: its state is
signed, its PKCE verifier derived from it, and its nonce waits in a cookie of the browser
that started it, so a callback forged or replayed into another browser is refused.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import construct_redirect_uri
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from services.edge.catalog import Catalog
from services.edge.errors import UnauthorizedError
from services.edge.identity.client_metadata import is_document_url
from services.edge.identity.oidc import CALLBACK_PATH, OpenIDProvider, SignInError
from services.edge.identity.state import FLOW_SECONDS, OAuthState
from services.edge.policy import KeyPolicy
from services.edge.signing import Signer, TokenKind, b64, unb64

# The page may not be framed (clickjacking), cached, or leak its URL onward.
HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
}
SHOWN_TOOLS = 200
# One cookie per provider sign-in (named by its state's digest), holding its nonce.
COOKIE_PREFIX = "mcpgw-oidc-"

STYLE = """body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:0 .2rem}.error{color:#a00}ul{max-height:20rem;overflow:auto}
button{margin-right:.5rem;padding:.4rem 1rem}input{width:100%;padding:.4rem;margin:.4rem 0 1rem}"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status, headers=HEADERS)


def endpoint_of(resource: str) -> str:
    """The server or group a resource URL names ("" for /mcp and /sse)."""
    path = urlsplit(resource).path
    return path[len("/mcp/") :] if path.startswith("/mcp/") else ""


def client_label(record: dict[str, Any]) -> str:
    """The client as the page names it (HTML): a metadata document's name is its own claim,
    so the host that serves it is shown beside it."""
    name = html.escape(record["client_name"] or record["client_id"])
    if is_document_url(record["client_id"]) and record["client_name"]:
        return f"{name} (from {html.escape(urlsplit(record['client_id']).hostname or '')})"
    return name


def cookie_name(state: str) -> str:
    return COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


class Consent:
    def __init__(
        self,
        state: OAuthState,
        signer: Signer,
        catalog: Callable[[], Catalog],
        provider: OpenIDProvider | None = None,
    ) -> None:
        self._state = state
        self._signer = signer
        self._catalog = catalog
        self._provider = provider

    async def __call__(self, request: Request) -> Response:
        if request.url.path == CALLBACK_PATH:
            if request.method != "GET":
                return Response(status_code=405, headers={"allow": "GET"})
            return await self._signed_in(request)
        if request.method == "GET":
            return await self._ask(request.query_params.get("request", ""))
        if request.method != "POST":
            return Response(status_code=405, headers={"allow": "GET, POST"})
        form = await request.form(max_files=0, max_fields=8)
        request_id = str(form.get("request", ""))
        action = str(form.get("action", ""))
        if action == "deny":
            return await self._deny(request_id)
        if action == "review":
            return await self._review(request_id, str(form.get("key", "")))
        if action == "sign-in":
            return await self._sign_in(request_id)
        if action == "allow":
            return await self._allow(request_id, str(form.get("approval", "")))
        return page("Bad request", "<p>Unknown action.</p>", 400)

    async def _ask(self, request_id: str, problem: str = "") -> Response:
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        client = client_label(record)
        error = f'<p class="error">{html.escape(problem)}</p>' if problem else ""
        hidden = f'<input type="hidden" name="request" value="{html.escape(request_id)}">'
        provider = (
            f'<form method="post">{hidden}<button name="action" value="sign-in">Sign in with '
            f"{html.escape(self._provider.config.name)}</button></form><p>or</p>"
            if self._provider is not None
            else ""
        )
        body = (
            f"<p><strong>{client}</strong> asks to use the MCP gateway at "
            f"<code>{html.escape(record['resource'])}</code> on your behalf.</p>{error}{provider}"
            '<form method="post"><label for="key">Your virtual key</label>'
            '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
            f"{hidden}"
            '<button name="action" value="review">Continue</button>'
            '<button name="action" value="deny" formnovalidate>Deny</button></form>'
        )
        return page("Sign in to the MCP gateway", body)

    async def _review(self, request_id: str, secret: str) -> Response:
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        try:
            key = self._catalog().governance.authenticate(secret.strip() or None)
        except UnauthorizedError as exc:
            return await self._ask(request_id, exc.message.removeprefix("Unauthorized: "))
        if key is None:
            return await self._ask(request_id, "Enter a virtual key.")
        return self._show(request_id, record, key)

    async def _sign_in(self, request_id: str) -> Response:
        """Off to the provider, with a state signed over this request and a nonce for this browser."""
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        if self._provider is None:
            return page("Bad request", "<p>Signing in with a provider is not set up here.</p>", 400)
        state = self._signer.sign(TokenKind.OIDC, f"{request_id}.{int(time.time())}")
        nonce = secrets.token_urlsafe(24)
        verifier = self._signer.derive(TokenKind.OIDC, state)
        try:
            target = await self._provider.authorization_url(
                record["issuer"] + CALLBACK_PATH, state, nonce, verifier
            )
        except SignInError as exc:
            return await self._ask(request_id, f"Signing in with {self._provider.config.name} failed: {exc}")
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            cookie_name(state),
            nonce,
            max_age=int(FLOW_SECONDS),
            path=CALLBACK_PATH,
            secure=record["issuer"].startswith("https:"),
            httponly=True,
            samesite="lax",
        )
        return response

    async def _signed_in(self, request: Request) -> Response:
        """The provider's answer: the person it vouches for, shown what their key grants."""
        query = request.query_params
        state = query.get("state", "")
        signed = self._signer.verify(TokenKind.OIDC, state)
        request_id, _, at = (signed or "").partition(".")
        if signed is None or not at.isdigit():
            return page("Bad request", "<p>This sign-in was not started here.</p>", 400)
        if time.time() - int(at) > FLOW_SECONDS:
            return _expired()
        nonce = request.cookies.get(cookie_name(state), "")
        if not nonce or self._provider is None:
            return page("Bad request", "<p>This sign-in was started in another browser.</p>", 400)
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        name = self._provider.config.name
        if "error" in query:
            reason = query.get("error_description") or query["error"]
            response = await self._ask(request_id, f"{name} did not sign you in: {reason[:200]}")
        else:
            verifier = self._signer.derive(TokenKind.OIDC, state)
            redirect = record["issuer"] + CALLBACK_PATH
            try:
                person = await self._provider.identify(query.get("code", ""), redirect, verifier, nonce)
                key = self._catalog().governance.identified(person)
            except SignInError as exc:
                response = await self._ask(request_id, f"Signing in with {name} failed: {exc}")
            except UnauthorizedError as exc:
                response = await self._ask(request_id, exc.message.removeprefix("Unauthorized: "))
            else:
                response = self._show(request_id, record, key, person)
        response.delete_cookie(cookie_name(state), path=CALLBACK_PATH)
        return response

    def _show(self, request_id: str, record: dict[str, Any], key: KeyPolicy, person: str = "") -> Response:
        """What `key` reaches at the resource, with the signed approval to allow it."""
        view = self._catalog().view_for(endpoint_of(record["resource"]), key)
        tools = sorted(view.tool_routes) if view is not None else []
        shown = "".join(f"<li><code>{html.escape(t)}</code></li>" for t in tools[:SHOWN_TOOLS])
        more = f"<p>and {len(tools) - SHOWN_TOOLS} more.</p>" if len(tools) > SHOWN_TOOLS else ""
        listing = f"<ul>{shown}</ul>{more}" if tools else "<p>No tools: this identity reaches none here.</p>"
        approval = self._signer.sign(
            TokenKind.CONSENT, f"{request_id}.{b64(person.encode())}.{key.id}.{int(time.time())}"
        )
        client = client_label(record)
        who = f"{html.escape(person)}, with the key " if person else ""
        body = (
            f"<p>As {who}<strong>{html.escape(key.name)}</strong>, <strong>{client}</strong> will reach "
            f"{len(tools)} tool{'s' if len(tools) != 1 else ''}:</p>{listing}"
            f'<form method="post"><input type="hidden" name="request" value="{html.escape(request_id)}">'
            f'<input type="hidden" name="approval" value="{html.escape(approval)}">'
            '<button name="action" value="allow">Allow</button>'
            '<button name="action" value="deny">Deny</button></form>'
        )
        return page("Allow access", body)

    async def _allow(self, request_id: str, approval: str) -> Response:
        signed = self._signer.verify(TokenKind.CONSENT, approval)
        approved_request, _, rest = (signed or "").partition(".")
        encoded_person, _, rest = rest.partition(".")
        key_id, _, at = rest.rpartition(".")
        if signed is None or approved_request != request_id or not at.isdigit():
            return page("Bad request", "<p>This approval was not issued for this sign-in.</p>", 400)
        person = unb64(encoded_person).decode()
        if time.time() - int(at) > FLOW_SECONDS:
            return _expired()
        record = await self._state.take_request(request_id)
        if record is None:
            return _expired()
        params = record["params"]
        code = secrets.token_urlsafe(32)
        await self._state.put_code(
            code,
            {
                "scopes": record["scopes"],
                "expires_at": time.time() + FLOW_SECONDS,
                "client_id": record["client_id"],
                "code_challenge": params["code_challenge"],
                "redirect_uri": params["redirect_uri"],
                "redirect_uri_provided_explicitly": params["redirect_uri_provided_explicitly"],
                "resource": record["resource"],
                "subject": f"vk:{key_id}",
                "key_id": key_id,
                "person": person,
                "issuer": record["issuer"],
            },
        )
        target = construct_redirect_uri(
            params["redirect_uri"], code=code, state=params.get("state"), iss=record["issuer"]
        )
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    async def _deny(self, request_id: str) -> Response:
        record = await self._state.take_request(request_id)
        if record is None:
            return _expired()
        params = record["params"]
        target = construct_redirect_uri(
            params["redirect_uri"],
            error="access_denied",
            error_description="the person declined",
            state=params.get("state"),
            iss=record["issuer"],
        )
        return RedirectResponse(target, status_code=303, headers=HEADERS)


def _expired() -> HTMLResponse:
    return page(
        "This sign-in has ended",
        "<p>It expired, or was already answered. Start again from your MCP client.</p>",
        400,
    )
