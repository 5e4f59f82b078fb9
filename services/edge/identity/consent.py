"""The consent pages of the authorize step: the person presents a virtual key, sees what
that identity grants at the resource, and allows or denies; allowing mints the code the
client redeems. Server-rendered forms, so a headless client can submit them too.

A pending authorization is taken once, whichever answer it gets; the review page carries
a token signed over the request and the key, so what is allowed is what was shown.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from mcp.server.auth.provider import construct_redirect_uri
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from services.edge.catalog import Catalog
from services.edge.errors import UnauthorizedError
from services.edge.identity.state import FLOW_SECONDS, OAuthState
from services.edge.signing import Signer, TokenKind

# The page may not be framed (clickjacking), cached, or leak its URL onward.
HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
}
SHOWN_TOOLS = 200

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


class Consent:
    def __init__(self, state: OAuthState, signer: Signer, catalog: Callable[[], Catalog]) -> None:
        self._state = state
        self._signer = signer
        self._catalog = catalog

    async def __call__(self, request: Request) -> Response:
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
        if action == "allow":
            return await self._allow(request_id, str(form.get("approval", "")))
        return page("Bad request", "<p>Unknown action.</p>", 400)

    async def _ask(self, request_id: str, problem: str = "") -> Response:
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        client = html.escape(record["client_name"] or record["client_id"])
        error = f'<p class="error">{html.escape(problem)}</p>' if problem else ""
        body = (
            f"<p><strong>{client}</strong> asks to use the MCP gateway at "
            f"<code>{html.escape(record['resource'])}</code> on your behalf.</p>{error}"
            '<form method="post"><label for="key">Your virtual key</label>'
            '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
            f'<input type="hidden" name="request" value="{html.escape(request_id)}">'
            '<button name="action" value="review">Continue</button>'
            '<button name="action" value="deny" formnovalidate>Deny</button></form>'
        )
        return page("Sign in to the MCP gateway", body)

    async def _review(self, request_id: str, secret: str) -> Response:
        record = await self._state.request(request_id)
        if record is None:
            return _expired()
        catalog = self._catalog()
        try:
            key = catalog.governance.authenticate(secret.strip() or None)
        except UnauthorizedError as exc:
            return await self._ask(request_id, exc.message.removeprefix("Unauthorized: "))
        if key is None:
            return await self._ask(request_id, "Enter a virtual key.")
        view = catalog.view_for(endpoint_of(record["resource"]), key)
        tools = sorted(view.tool_routes) if view is not None else []
        shown = "".join(f"<li><code>{html.escape(t)}</code></li>" for t in tools[:SHOWN_TOOLS])
        more = f"<p>and {len(tools) - SHOWN_TOOLS} more.</p>" if len(tools) > SHOWN_TOOLS else ""
        listing = f"<ul>{shown}</ul>{more}" if tools else "<p>No tools: this identity reaches none here.</p>"
        approval = self._signer.sign(TokenKind.CONSENT, f"{request_id}.{key.id}.{int(time.time())}")
        client = html.escape(record["client_name"] or record["client_id"])
        body = (
            f"<p>As <strong>{html.escape(key.name)}</strong>, <strong>{client}</strong> will reach "
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
        key_id, _, at = rest.rpartition(".")
        if signed is None or approved_request != request_id or not at.isdigit():
            return page("Bad request", "<p>This approval was not issued for this sign-in.</p>", 400)
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
