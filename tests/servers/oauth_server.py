"""An OAuth 2.0 authorization server and the MCP server it protects, for tests.

`POST /token` answers RFC 6749's client credentials, authorization code (with RFC 7636
PKCE, S256) and refresh token grants, issuing opaque bearer tokens that live
`--token-seconds`. With `--rotate-refresh` each refresh spends its refresh token and issues
a new one, and a spent one presented again revokes all of its person's tokens (reuse
detection, as OAuth 2.1 recommends); a refresh answers after `--refresh-delay`. With
`--no-refresh` there are none (the access token is all a person's authorization leaves).
`GET /authorize` consents at once, as a person who clicks "allow" would, and redirects
back with a code; `?user=NAME` logs in as that person, whom the code's tokens (and
`whoami`) stand for. `/mcp` is a Streamable HTTP MCP server that answers 401 (RFC 6750) to
a missing, unknown or expired token. `GET /stats` counts the tokens issued, refreshes and
reuses. With `--client-public-key PEM` the client authenticates with RFC 7523 assertions
signed by its private key instead of its secret. `POST /revoke-all` makes every issued
token unknown (`?user=NAME`: every token of that person's, refresh tokens too).

    python oauth_server.py --port 8765 --client-id gw --client-secret s3cret --token-seconds 2
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

server = MCPServer("protected", log_level="WARNING")


# Bearer tokens of people (--user-tokens), valid without the token endpoint: for per-user
# credentials, where each caller brings their own.
USERS: dict[str, str] = {}
# The person each token from the token endpoint stands for (who logged in at /authorize).
ISSUED_TO: dict[str, str] = {}


@server.tool()
def whoami(ctx: Context) -> str:
    """Who the caller is: the person its token stands for, else "authorized"."""
    request = ctx.request_context.request
    token = (request.headers.get("authorization", "") if request is not None else "").removeprefix("Bearer ")
    return USERS.get(token) or ISSUED_TO.get(token, "authorized")


class Tokens:
    def __init__(
        self, client_id: str, client_secret: str, lifetime: float, rotate: bool = False, refresh: bool = True
    ) -> None:
        self.client_id, self.client_secret, self.lifetime = client_id, client_secret, lifetime
        self.rotate, self.issue_refresh = rotate, refresh
        # With a public key, clients authenticate by private_key_jwt (RFC 7523) only.
        self.public_key = ""
        self.assertions: set[str] = set()
        self.expiry: dict[str, float] = {}
        self.issued = 0
        self.refused = 0
        self.refreshes = 0
        # Spent refresh tokens presented again; each revoked its person's grant (OAuth 2.1 4.3.1).
        self.reused = 0
        self.spent: dict[str, str] = {}
        self.refresh_delay = 0.0
        # code -> (redirect_uri, S256 challenge, person); refresh token -> person.
        self.codes: dict[str, tuple[str, str, str]] = {}
        self.refresh: dict[str, str] = {}

    def valid(self, token: str) -> bool:
        return token in USERS or self.expiry.get(token, 0.0) > time.monotonic()


def credentials(request: Request, form: Any) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))


def asserted(tokens: Tokens, token_url: str, form: Any) -> bool:
    """Whether the form carries an RFC 7523 client assertion the client's key signed, for
    this endpoint, not seen before."""
    if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
        return False
    try:
        claims = jwt.decode(
            str(form.get("client_assertion")),
            tokens.public_key,
            algorithms=["RS256", "ES256", "EdDSA"],
            audience=token_url,
            issuer=tokens.client_id,
            options={"require": ["exp", "jti", "sub"]},
        )
    except jwt.PyJWTError:
        return False
    if claims["sub"] != tokens.client_id or claims["jti"] in tokens.assertions:
        return False
    tokens.assertions.add(claims["jti"])
    return True


def revoke(tokens: Tokens, person: str) -> None:
    """End every token of a person's, refresh tokens too."""
    for issued in [t for t, whom in ISSUED_TO.items() if whom == person]:
        tokens.expiry.pop(issued, None)
    for refresh in [t for t, whom in tokens.refresh.items() if whom == person]:
        del tokens.refresh[refresh]


def create_app(tokens: Tokens) -> Starlette:
    async def authorize(request: Request) -> Response:
        query = request.query_params
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        if query.get("client_id") != tokens.client_id:
            return JSONResponse({"error": "unauthorized_client"}, 400)
        code = secrets.token_urlsafe(16)
        tokens.codes[code] = (query["redirect_uri"], query["code_challenge"], query.get("user", "authorized"))
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        return RedirectResponse(target, 302)

    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        grant = form.get("grant_type")
        client_id, client_secret = credentials(request, form)
        if tokens.public_key:
            authenticated = asserted(tokens, str(request.url), form)
        else:
            authenticated = secrets.compare_digest(client_id, tokens.client_id) and secrets.compare_digest(
                client_secret, tokens.client_secret
            )
        if not authenticated:
            return JSONResponse({"error": "invalid_client"}, 401, headers={"www-authenticate": "Basic"})
        body: dict[str, Any] = {}
        person = "authorized"
        if grant == "authorization_code":
            redirect_uri, challenge, person = tokens.codes.pop(str(form.get("code")), ("", "", ""))
            verifier = str(form.get("code_verifier", ""))
            computed = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            )
            if not challenge or form.get("redirect_uri") != redirect_uri or computed != challenge:
                return JSONResponse({"error": "invalid_grant"}, 400)
            if tokens.issue_refresh:
                body["refresh_token"] = secrets.token_urlsafe(24)
                tokens.refresh[body["refresh_token"]] = person
        elif grant == "refresh_token":
            # As a distant or busy server: the time in which another asker may race this one.
            await anyio.sleep(tokens.refresh_delay)
            presented = str(form.get("refresh_token"))
            if presented in tokens.spent:
                tokens.reused += 1
                revoke(tokens, tokens.spent[presented])
            if presented not in tokens.refresh:
                return JSONResponse({"error": "invalid_grant"}, 400)
            person = tokens.refresh[presented]
            tokens.refreshes += 1
            if tokens.rotate:
                tokens.spent[presented] = person
                del tokens.refresh[presented]
                body["refresh_token"] = secrets.token_urlsafe(24)
                tokens.refresh[body["refresh_token"]] = person
        elif grant != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        issued = secrets.token_urlsafe(24)
        tokens.expiry[issued] = time.monotonic() + tokens.lifetime
        ISSUED_TO[issued] = person
        tokens.issued += 1
        body.update({"access_token": issued, "token_type": "Bearer", "expires_in": tokens.lifetime})
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issued": tokens.issued,
                "refused": tokens.refused,
                "refreshes": tokens.refreshes,
                "reused": tokens.reused,
            }
        )

    async def revoke_all(request: Request) -> Response:
        # ?user=NAME revokes that person's tokens only, refresh tokens too.
        user = request.query_params.get("user")
        if user is None:
            tokens.expiry.clear()
        else:
            revoke(tokens, user)
        return Response(status_code=204)

    mcp_app = server.streamable_http_app(streamable_http_path="/")

    def protected(app: ASGIApp) -> ASGIApp:
        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                header = dict(scope["headers"]).get(b"authorization", b"").decode()
                if not (header.startswith("Bearer ") and tokens.valid(header[7:])):
                    tokens.refused += 1
                    challenge = 'Bearer error="invalid_token"'
                    await Response(status_code=401, headers={"www-authenticate": challenge})(
                        scope, receive, send
                    )
                    return
            await app(scope, receive, send)

        return guard

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/authorize", authorize),
            Route("/stats", stats),
            Route("/revoke-all", revoke_all, methods=["POST"]),
            Mount("/mcp", app=protected(mcp_app)),
        ],
        lifespan=lifespan,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--token-seconds", type=float, default=60.0)
    parser.add_argument("--user-tokens", default="", help="TOKEN=NAME,... of people")
    parser.add_argument("--rotate-refresh", action="store_true")
    parser.add_argument("--refresh-delay", type=float, default=0.0, help="seconds before a refresh answers")
    parser.add_argument("--client-public-key", default="", help="PEM file: clients sign assertions")
    parser.add_argument(
        "--no-refresh", action="store_true", help="issue no refresh tokens (as GitHub OAuth apps)"
    )
    args = parser.parse_args()
    USERS.update(pair.split("=", 1) for pair in args.user_tokens.split(",") if pair)
    tokens = Tokens(
        args.client_id, args.client_secret, args.token_seconds, args.rotate_refresh, not args.no_refresh
    )
    tokens.refresh_delay = args.refresh_delay
    if args.client_public_key:
        tokens.public_key = Path(args.client_public_key).read_text()
    uvicorn.run(create_app(tokens), host="127.0.0.1", port=args.port, log_level="warning")
