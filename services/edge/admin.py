"""The management REST API under `/api/` (OpenAPI at `/api/openapi.json`): servers, tools,
virtual keys, tool groups, the blocklist and settings, each one call to registry's admin RPCs.

Every route needs `Authorization: Bearer <admin token>` (`MCPGW_ADMIN_TOKEN`), which is
not a virtual key. Registry's refusals map to 422 (the field named), 409 and 404.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from nats.aio.client import Client as NATS
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from services import bus
from services.auth_modes import AUTH_MODES, mode_name
from services.contracts import audit_pb2_grpc, registry_pb2, registry_pb2_grpc
from services.edge import audit_api
from services.edge.approvals import APPROVAL_ID, Approvals
from services.edge.identity.connections import ADMIN_CALLBACK_PATH, AUTHORIZE_SECONDS, callbacks
from services.edge.identity.credentials import base_url
from services.edge.limits.limiter import Limiter, key_rules
from services.selections import selection_dict, selection_message
from services.tool_modes import TOOL_MODES, ToolModeName, tool_mode_name

T = TypeVar("T")
ADMIN_TIMEOUT = 10.0
# Wrong admin tokens a client may present per minute (API and console sign-in together).
GUESSES_PER_MINUTE = 10
# Swagger UI's files (npm swagger-ui-dist), shipped in the package beside the console's.
SWAGGER = FilePath(__file__).parent / "console" / "static" / "swagger"
DOCS_ASSETS = "/api/docs/assets"
DOCS_HEADERS = {
    "content-security-policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.NOT_FOUND: 404,
}


class AdminToken:
    """A bearer token held as its SHA-256 digest only, to check presented tokens against: the
    management API's and the console's sign-in share this one check."""

    def __init__(self, token: str) -> None:
        # "" admits nothing (the API or sign-in is off), rather than an empty token.
        self._digest = hashlib.sha256(token.encode()).digest() if token else b""

    def __bool__(self) -> bool:
        return bool(self._digest)

    @property
    def digest(self) -> bytes:
        """The token's SHA-256 digest (b"" for none), e.g. to derive keys that change with it."""
        return self._digest

    def admits(self, presented: str) -> bool:
        """Whether `presented` is the token: digests of equal length, compared in constant time."""
        if not self._digest:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._digest)


class TooManyGuessesError(Exception):
    """A client past its wrong admin tokens: refused, its token unchecked, for `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many wrong admin tokens: retry in {retry_after}s")
        self.retry_after = retry_after


class Guesses:
    """Wrong admin tokens per client address: past `per_minute` of them in a minute a client
    is refused without its token being checked, until its window moves on, so a weak token
    cannot be guessed (the API and the console's sign-in count together, per replica)."""

    def __init__(self, per_minute: int = GUESSES_PER_MINUTE) -> None:
        self._item = RateLimitItemPerMinute(per_minute)
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def admits(self, client: str, presented: str, *held: AdminToken) -> bool:
        """Whether `presented` is one of the `held` tokens; a wrong one counts against `client`
        (no token at all is no guess). TooManyGuessesError when `client` is past its limit."""
        if not self._window.test(self._item, client):
            reset = self._window.get_window_stats(self._item, client).reset_time
            raise TooManyGuessesError(max(1, math.ceil(reset - time.time())))
        # Every token checked, whichever matches, so the time taken does not tell which it was.
        if any([token.admits(presented) for token in held]):
            return True
        if presented:
            self._window.hit(self._item, client)
        return False


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


class ToolSelection(BaseModel):
    """Bifrost's mcp_configs entry: ["*"] is every tool of the server, [] none."""

    model_config = ConfigDict(extra="forbid")

    mcp_client_name: str = Field(min_length=1, max_length=64)
    tools_to_execute: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000
    )
    # Of those, the ones that run without a person's approval (absent or null: all of them).
    tools_to_auto_execute: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=1000
    )

    @model_serializer(mode="wrap")
    def _unset_is_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        shown: dict[str, Any] = handler(self)
        if shown.get("tools_to_auto_execute") is None:
            shown.pop("tools_to_auto_execute", None)
        return shown


class RateLimit(BaseModel):
    """Bifrost's rate_limit: calls per window."""

    model_config = ConfigDict(extra="forbid")

    request_max_limit: int = Field(ge=1, le=2**53)
    # "30s", "1m", "1h", "1d", "1w", "1M" or "1Y".
    request_reset_duration: str = Field(default="1m", max_length=16)


class Budget(BaseModel):
    """Bifrost's budget: money per window, spent at the tools' tool_pricing."""

    model_config = ConfigDict(extra="forbid")

    max_limit: float = Field(gt=0, le=1e12, allow_inf_nan=False)
    reset_duration: str = Field(default="1M", max_length=16)
    calendar_aligned: bool = False


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=1000)
    active: bool = True
    # Unix seconds; absent or null never expires.
    expires_at: int | None = Field(default=None, ge=0, le=2**53)
    mcp_configs: list[ToolSelection] = Field(default_factory=list, max_length=1000)
    groups: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )
    # Who signs in as this key with the OpenID Connect provider: an email, or "*@domain".
    identities: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=1000
    )
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    # Calls per window of single tools, by exposed name.
    tool_rate_limits: dict[Annotated[str, Field(min_length=1, max_length=256)], RateLimit] = Field(
        default_factory=dict, max_length=1000
    )
    # The key's calls in flight at once (0: no cap), how many more wait, and how long.
    max_concurrency: int = Field(default=0, ge=0, le=100_000)
    max_queue: int = Field(default=0, ge=0, le=100_000)
    queue_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # How its views offer tools: classic (each tool), code (Code Mode's four meta-tools) or
    # search (searchTools and callTool).
    tool_mode: ToolModeName = "classic"


class KeyPatch(BaseModel):
    """The fields to change; the others keep their values."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=1000)
    active: bool | None = None
    expires_at: int | None = Field(default=None, ge=0, le=2**53)
    mcp_configs: list[ToolSelection] | None = Field(default=None, max_length=1000)
    groups: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=1000
    )
    identities: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=1000
    )
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    tool_rate_limits: dict[Annotated[str, Field(min_length=1, max_length=256)], RateLimit] | None = Field(
        default=None, max_length=1000
    )
    max_concurrency: int | None = Field(default=None, ge=0, le=100_000)
    max_queue: int | None = Field(default=None, ge=0, le=100_000)
    queue_timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    tool_mode: ToolModeName | None = None


class KeyOut(BaseModel):
    id: str
    name: str
    description: str
    active: bool
    expires_at: int | None
    mcp_configs: list[ToolSelection]
    groups: list[str]
    identities: list[str]
    rate_limit: RateLimit | None
    budget: Budget | None
    tool_rate_limits: dict[str, RateLimit]
    max_concurrency: int
    max_queue: int
    queue_timeout_seconds: float
    tool_mode: ToolModeName
    # The secret's first characters, to tell keys apart; the secret itself is never listed.
    secret_prefix: str
    created_at: int
    rotated_at: int


class Usage(BaseModel):
    # key | key_tool | budget, and the tool of a key_tool limit.
    limit: str
    tool: str | None
    # Calls, or money for the budget, this window across every edge (null while unknown).
    used: float | None
    max: float
    reset_duration: str
    resets_at: str


class KeyWithUsage(KeyOut):
    usage: list[Usage]


class ConnectionOut(BaseModel):
    # The identity (virtual key) that connected its own account, and when (Unix seconds).
    key_id: str
    updated_at: int


class IssuedKey(KeyOut):
    # Shown this once: store it now.
    secret: str


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Sent to the per_user server on every request made with this key.
    headers: dict[
        Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(max_length=8192)]
    ] = Field(min_length=1, max_length=32)


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1000)
    tools: list[ToolSelection] = Field(default_factory=list, max_length=1000)
    # Calls of the group's tools by all the keys that hold it, per window.
    rate_limit: RateLimit | None = None
    # How /mcp/{group} offers the group's tools (classic, code or search).
    tool_mode: ToolModeName = "classic"


class PendingApproval(BaseModel):
    id: str
    key_id: str
    tool: str
    # The call's arguments as JSON (at most 2,000 characters).
    arguments: str
    edge_id: str
    created_at: float
    expires_at: float


class Blocklist(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Exposed tool names, or <server><separator>* for every tool of a server.
    patterns: list[Annotated[str, Field(min_length=1, max_length=129)]] = Field(max_length=10000)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Requests without a virtual key get 401 (Bifrost: enforce_governance_header).
    require_key: bool | None = Field(
        default=None, validation_alias=AliasChoices("require_key", "enforce_governance_header")
    )
    # How MCP clients authenticate (Bifrost's name); null when never set, which is "headers".
    mcp_server_auth_mode: Literal["headers", "both", "oauth"] | None = None


def settings_out(settings: registry_pb2.GovernanceSettings) -> dict[str, Any]:
    return {"require_key": settings.require_key, "mcp_server_auth_mode": mode_name(settings.auth_mode)}


class ToolToggle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


class ServerOut(BaseModel):
    config: dict[str, Any]
    state: str
    error: str
    source: str
    tools: int
    # While not connected: failed attempts in a row and when the next is due (ISO 8601, UTC).
    attempts: int
    next_attempt: str | None


class ToolOut(BaseModel):
    server: str
    name: str
    exposed_name: str
    description: str
    enabled: bool


def _key_out(key: registry_pb2.VirtualKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "active": key.active,
        "expires_at": key.expires_at or None,
        "mcp_configs": [selection_dict(s) for s in key.mcp_configs],
        "groups": list(key.groups),
        "identities": list(key.identities),
        **_limits_out(key.limits),
        "tool_mode": tool_mode_name(key.tool_mode),
        "secret_prefix": key.secret_prefix,
        "created_at": key.created_at,
        "rotated_at": key.rotated_at,
    }


def _selections(selections: list[ToolSelection]) -> list[registry_pb2.ToolSelection]:
    return [selection_message(s.model_dump()) for s in selections]


def _key_message(key_id: str, spec: KeyIn) -> registry_pb2.VirtualKey:
    return registry_pb2.VirtualKey(
        id=key_id,
        name=spec.name,
        description=spec.description,
        active=spec.active,
        expires_at=spec.expires_at or 0,
        mcp_configs=_selections(spec.mcp_configs),
        groups=spec.groups,
        identities=spec.identities,
        limits=_limits_of(spec),
        tool_mode=TOOL_MODES[spec.tool_mode],
    )


def _request_limit(limit: RateLimit) -> registry_pb2.RequestLimit:
    return registry_pb2.RequestLimit(
        max_requests=limit.request_max_limit, reset_duration=limit.request_reset_duration
    )


def _limits_of(spec: KeyIn) -> registry_pb2.Limits:
    limits = registry_pb2.Limits(
        tool_rate_limits={t: _request_limit(r) for t, r in spec.tool_rate_limits.items()},
        max_concurrency=spec.max_concurrency,
        max_queue=spec.max_queue,
        queue_timeout_seconds=spec.queue_timeout_seconds,
    )
    if spec.rate_limit is not None:
        limits.rate_limit.CopyFrom(_request_limit(spec.rate_limit))
    if spec.budget is not None:
        limits.budget.CopyFrom(registry_pb2.Budget(**spec.budget.model_dump()))
    return limits


def _limits_out(limits: registry_pb2.Limits) -> dict[str, Any]:
    def request(limit: registry_pb2.RequestLimit) -> dict[str, Any]:
        return {"request_max_limit": limit.max_requests, "request_reset_duration": limit.reset_duration}

    budget = limits.budget
    return {
        "rate_limit": request(limits.rate_limit) if limits.HasField("rate_limit") else None,
        "budget": {
            "max_limit": budget.max_limit,
            "reset_duration": budget.reset_duration,
            "calendar_aligned": budget.calendar_aligned,
        }
        if limits.HasField("budget")
        else None,
        "tool_rate_limits": {t: request(r) for t, r in sorted(limits.tool_rate_limits.items())},
        "max_concurrency": limits.max_concurrency,
        "max_queue": limits.max_queue,
        "queue_timeout_seconds": limits.queue_timeout_seconds or 30.0,
    }


def _group_out(group: registry_pb2.ToolGroup) -> dict[str, Any]:
    return {
        "name": group.name,
        "description": group.description,
        "tools": [selection_dict(s) for s in group.tools],
        "rate_limit": {
            "request_max_limit": group.rate_limit.max_requests,
            "request_reset_duration": group.rate_limit.reset_duration,
        }
        if group.HasField("rate_limit")
        else None,
        "tool_mode": tool_mode_name(group.tool_mode),
    }


def _server_out(server: registry_pb2.ServerState) -> dict[str, Any]:
    return {
        "config": orjson.loads(server.config_json),
        "state": server.state,
        "error": server.error,
        "source": server.source,
        "tools": server.tools,
        "attempts": server.attempts,
        "next_attempt": datetime.fromtimestamp(server.next_attempt_unix, UTC).isoformat(timespec="seconds")
        if server.next_attempt_unix
        else None,
    }


def create_admin_api(
    registry: registry_pb2_grpc.RegistryStub,
    nc: NATS,
    admin_token: str,
    audit: audit_pb2_grpc.AuditStub,
    public_url: str = "",
    caught_up: Callable[[], Awaitable[None]] | None = None,
    limiter: Limiter | None = None,
    approvals: Approvals | None = None,
    console_token: str = "",
    guesses: Guesses | None = None,
) -> FastAPI:
    """The API; `console_token` is a second token, never shown, that the console (in this
    process) calls it with, so the console works when people sign in to it with a provider."""
    token, console = AdminToken(admin_token), AdminToken(console_token)
    guesses = guesses or Guesses()

    def admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        client = request.client.host if request.client else ""
        presented = (authorization or "").removeprefix("Bearer ").removeprefix("bearer ").strip()
        try:
            if guesses.admits(client, presented, token, console):
                return
        except TooManyGuessesError as exc:
            raise ApiError(429, str(exc), headers={"retry-after": str(exc.retry_after)}) from None
        if not token:
            raise ApiError(401, "the admin API is off: start the edge with MCPGW_ADMIN_TOKEN set")
        raise ApiError(401, "send the admin token as Authorization: Bearer <token> (not a virtual key)")

    api = FastAPI(
        title="mcpgw management API",
        version="1",
        openapi_url="/api/openapi.json",
        # /api/docs is served below from Swagger UI's files in the package, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    api.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER), name="docs-assets")

    @api.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="mcpgw management API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            # No spec validator badge: it would send the spec to a public validator.
            swagger_ui_parameters={"validatorUrl": None},
        )
        # Never framed (clickjacking), nothing sniffed. Swagger UI's page starts itself with
        # an inline script, so its CSP stops framing, plugins and <base>, not inline code.
        page.headers.update(DOCS_HEADERS)
        return page

    # Every route but the OAuth callback, which a browser reaches with only its one-time state.
    router = APIRouter(dependencies=[Depends(admin)])

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return JSONResponse({"error": {"message": first["msg"], "field": field}}, 422)

    @api.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"error": {"message": exc.message}}
        if exc.field is not None:
            body["error"]["field"] = exc.field
        headers = {"www-authenticate": 'Bearer realm="mcpgw-admin"'} if exc.status == 401 else exc.headers
        return JSONResponse(body, exc.status, headers=headers)

    @api.exception_handler(audit_api.Unavailable)
    async def audit_unavailable(_: Request, exc: audit_api.Unavailable) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc)}}, 503)

    @api.exception_handler(audit_api.BadTime)
    async def bad_time(_: Request, exc: audit_api.BadTime) -> JSONResponse:
        field, _sep, message = str(exc).partition(": ")
        return JSONResponse({"error": {"message": message, "field": field}}, 422)

    async def rpc(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            status = STATUS.get(exc.code())
            if status is None:
                raise ApiError(503, f"the registry did not answer: {exc.code().name}") from None
            message = exc.details() or exc.code().name
            field, _, rest = message.partition(": ")
            if status == 422 and rest and " " not in field:
                raise ApiError(422, rest, field) from None
            raise ApiError(status, message) from None

    def call(method: Any, request: Any) -> Awaitable[Any]:
        return rpc(method(request, timeout=ADMIN_TIMEOUT))

    async def write(method: Any, request: Any) -> Any:
        """A change, answered once this edge serves it: a key just created works at once."""
        done = await call(method, request)
        if caught_up is not None:
            # Should registry not answer now, the change is made: the follower catches up.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await caught_up()
        return done

    # Servers

    @router.get("/api/servers", response_model=list[ServerOut])
    async def list_servers() -> list[dict[str, Any]]:
        states = await call(registry.ListServerStates, registry_pb2.AdminRequest())
        return [_server_out(s) for s in states.servers]

    @router.post("/api/servers", status_code=201, response_model=ServerOut)
    async def add_server(config: dict[str, Any]) -> dict[str, Any]:
        request = registry_pb2.PutServerRequest(config_json=orjson.dumps(config), create=True)
        return _server_out(await write(registry.PutServer, request))

    @router.put("/api/servers/{name}", response_model=ServerOut)
    async def update_server(name: str, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("name", name) != name:
            raise ApiError(422, "must match the server named in the path", "name")
        request = registry_pb2.PutServerRequest(config_json=orjson.dumps({**config, "name": name}))
        return _server_out(await write(registry.PutServer, request))

    @router.delete("/api/servers/{name}", status_code=204)
    async def remove_server(name: str) -> Response:
        await write(registry.RemoveServer, registry_pb2.NameRequest(name=name))
        return Response(status_code=204)

    @router.post("/api/mcp/client/{name}/reconnect", status_code=202)
    async def reconnect(name: str) -> dict[str, str]:
        states = await call(registry.ListServerStates, registry_pb2.AdminRequest())
        if not any(orjson.loads(s.config_json).get("name") == name for s in states.servers):
            raise ApiError(404, f"no server named {name!r}")
        await nc.publish(bus.SERVER_RECONNECT, name.encode())
        return {"status": "reconnecting", "server": name}

    # Tools

    @router.get("/api/tools", response_model=list[ToolOut])
    async def list_tools(server: Annotated[str, Query(max_length=64)] = "") -> list[dict[str, Any]]:
        tools = await call(registry.ListCatalogTools, registry_pb2.CatalogToolsRequest(server=server))
        return [
            {
                "server": t.server,
                "name": t.name,
                "exposed_name": t.exposed_name,
                "description": t.description,
                "enabled": t.enabled,
            }
            for t in tools.tools
        ]

    # {tool:path}: a downstream tool's name may hold a "/" (sent as %2F, which the ASGI path decodes).
    @router.put("/api/tools/{server}/{tool:path}")
    async def toggle_tool(server: str, tool: str, toggle: ToolToggle) -> dict[str, Any]:
        request = registry_pb2.ToolToggle(server=server, tool=tool, enabled=toggle.enabled)
        await write(registry.SetToolEnabled, request)
        return {"server": server, "tool": tool, "enabled": toggle.enabled}

    # Virtual keys

    async def key_by_id(key_id: str) -> registry_pb2.VirtualKey:
        keys = await call(registry.ListKeys, registry_pb2.AdminRequest())
        for key in keys.keys:
            if key.id == key_id:
                return key  # type: ignore[no-any-return]
        raise ApiError(404, f"no key with id {key_id!r}")

    @router.get("/api/keys", response_model=list[KeyOut])
    async def list_keys() -> list[dict[str, Any]]:
        keys = await call(registry.ListKeys, registry_pb2.AdminRequest())
        return [_key_out(k) for k in keys.keys]

    @router.post("/api/keys", status_code=201, response_model=IssuedKey)
    async def create_key(spec: KeyIn) -> dict[str, Any]:
        issued = await write(registry.CreateKey, _key_message("", spec))
        return {**_key_out(issued.key), "secret": issued.secret}

    @router.get("/api/keys/{key_id}", response_model=KeyWithUsage)
    async def get_key(key_id: str) -> dict[str, Any]:
        """The key, and what it spent of each limit this window (used is null while unknown)."""
        key = await key_by_id(key_id)
        usage = []
        if limiter is not None:
            usage = [await limiter.usage(rule) for rule in key_rules(key.id, key.name, key.limits)]
        return {**_key_out(key), "usage": usage}

    @router.patch("/api/keys/{key_id}", response_model=KeyOut)
    async def update_key(key_id: str, patch: KeyPatch) -> dict[str, Any]:
        current = KeyIn.model_validate(
            {k: v for k, v in _key_out(await key_by_id(key_id)).items() if k in KeyIn.model_fields}
        )
        changes = patch.model_dump(exclude_unset=True)
        merged = KeyIn.model_validate({**current.model_dump(), **changes})
        return _key_out(await write(registry.UpdateKey, _key_message(key_id, merged)))

    @router.put("/api/keys/{key_id}/credentials/{server}", status_code=204)
    async def set_credentials(key_id: str, server: str, credentials: Credentials) -> Response:
        """The key's own headers for a per_user server (sealed at rest; never shown again)."""
        request = registry_pb2.KeyCredentials(key_id=key_id, server=server, headers=credentials.headers)
        await write(registry.SetKeyCredentials, request)
        return Response(status_code=204)

    @router.delete("/api/keys/{key_id}/credentials/{server}", status_code=204)
    async def remove_credentials(key_id: str, server: str) -> Response:
        await write(registry.SetKeyCredentials, registry_pb2.KeyCredentials(key_id=key_id, server=server))
        return Response(status_code=204)

    @router.post("/api/keys/{key_id}/rotate", response_model=IssuedKey)
    async def rotate_key(key_id: str) -> dict[str, Any]:
        issued = await write(registry.RotateKey, registry_pb2.NameRequest(name=key_id))
        return {**_key_out(issued.key), "secret": issued.secret}

    @router.delete("/api/keys/{key_id}", status_code=204)
    async def revoke_key(key_id: str) -> Response:
        await write(registry.DeleteKey, registry_pb2.NameRequest(name=key_id))
        return Response(status_code=204)

    # Tool groups

    @router.get("/api/groups", response_model=list[GroupIn])
    async def list_groups() -> list[dict[str, Any]]:
        groups = await call(registry.ListGroups, registry_pb2.AdminRequest())
        return [_group_out(g) for g in groups.groups]

    def group_message(group: GroupIn) -> registry_pb2.ToolGroup:
        message = registry_pb2.ToolGroup(
            name=group.name,
            description=group.description,
            tools=_selections(group.tools),
            tool_mode=TOOL_MODES[group.tool_mode],
        )
        if group.rate_limit is not None:
            message.rate_limit.CopyFrom(_request_limit(group.rate_limit))
        return message

    @router.post("/api/groups", status_code=201, response_model=GroupIn)
    async def create_group(group: GroupIn) -> dict[str, Any]:
        request = registry_pb2.PutGroupRequest(group=group_message(group), create=True)
        return _group_out(await write(registry.PutGroup, request))

    @router.put("/api/groups/{name}", response_model=GroupIn)
    async def update_group(name: str, group: GroupIn) -> dict[str, Any]:
        if group.name != name:
            raise ApiError(422, "must match the group named in the path", "name")
        request = registry_pb2.PutGroupRequest(group=group_message(group))
        return _group_out(await write(registry.PutGroup, request))

    @router.delete("/api/groups/{name}", status_code=204)
    async def delete_group(name: str) -> Response:
        await write(registry.DeleteGroup, registry_pb2.NameRequest(name=name))
        return Response(status_code=204)

    # Calls waiting for a person's approval (tools outside their key's tools_to_auto_execute)

    def approving() -> Approvals:
        if approvals is None:
            raise ApiError(404, "approvals are not served by this edge")
        return approvals

    @router.get("/api/approvals", response_model=list[PendingApproval])
    async def list_approvals() -> list[dict[str, Any]]:
        """Every edge's calls waiting for approval, oldest first."""
        return await approving().pending()

    @router.post("/api/approvals/{approval_id}/{verdict}", status_code=204)
    async def decide_approval(
        approval_id: Annotated[str, Path(pattern=APPROVAL_ID)], verdict: Literal["approve", "deny"]
    ) -> Response:
        """Approve or deny a waiting call (it runs, or answers that it was denied)."""
        if not await approving().resolve(approval_id, verdict == "approve"):
            raise ApiError(404, f"no call waits for approval under {approval_id!r}")
        return Response(status_code=204)

    # Blocklist and settings

    @router.get("/api/blocklist", response_model=Blocklist)
    async def get_blocklist() -> dict[str, Any]:
        stored = await call(registry.GetBlocklist, registry_pb2.AdminRequest())
        return {"patterns": list(stored.patterns)}

    @router.put("/api/blocklist", response_model=Blocklist)
    async def set_blocklist(blocklist: Blocklist) -> dict[str, Any]:
        stored = await write(registry.SetBlocklist, registry_pb2.Blocklist(patterns=blocklist.patterns))
        return {"patterns": list(stored.patterns)}

    @router.get("/api/settings", response_model=Settings)
    async def get_settings() -> dict[str, Any]:
        return settings_out(await call(registry.GetSettings, registry_pb2.AdminRequest()))

    @router.put("/api/settings", response_model=Settings)
    async def set_settings(settings: Settings) -> dict[str, Any]:
        # What the body leaves out stays as it is.
        stored = await call(registry.GetSettings, registry_pb2.AdminRequest())
        if settings.require_key is not None:
            stored.require_key = settings.require_key
        if settings.mcp_server_auth_mode is not None:
            stored.auth_mode = AUTH_MODES[settings.mcp_server_auth_mode]
        return settings_out(await write(registry.UpdateSettings, stored))

    @router.post("/api/mcp/client/{name}/oauth/authorize")
    async def authorize(name: str, request: Request) -> dict[str, str]:
        """Start OAuth 2.0 authorization code with PKCE: open the URL, consent, come back."""
        base = base_url(request, public_url)
        start = registry_pb2.StartAuthorizationRequest(
            server=name, redirect_uri=base + ADMIN_CALLBACK_PATH, redirect_uris=callbacks(base)
        )
        started = await rpc(registry.StartAuthorization(start, timeout=AUTHORIZE_SECONDS))
        return {"authorization_url": started.authorization_url}

    @router.get("/api/mcp/client/{name}/oauth/connections", response_model=list[ConnectionOut])
    async def connections(name: str) -> list[dict[str, Any]]:
        """The identities that connected their own accounts at a per_user_oauth server."""
        listed = await call(registry.ListUserTokens, registry_pb2.UserTokenRequest(server=name))
        return [{"key_id": t.key_id, "updated_at": t.updated_at} for t in listed.tokens]

    @router.delete("/api/mcp/client/{name}/oauth/connections/{key_id}", status_code=204)
    async def disconnect(name: str, key_id: str) -> Response:
        await call(registry.DeleteUserToken, registry_pb2.UserTokenRequest(server=name, key_id=key_id))
        return Response(status_code=204)

    @api.get(ADMIN_CALLBACK_PATH, include_in_schema=False)
    async def callback(
        state: Annotated[str, Query(max_length=256)] = "",
        code: Annotated[str, Query(max_length=4096)] = "",
        error: Annotated[str, Query(max_length=256)] = "",
    ) -> Response:
        if error or not state or not code:
            return PlainTextResponse(f"Authorization did not complete: {error or 'no code'}.", 400)
        try:
            await call(
                registry.CompleteAuthorization,
                registry_pb2.CompleteAuthorizationRequest(state=state, code=code),
            )
        except ApiError as exc:
            return PlainTextResponse(f"Authorization did not complete: {exc.message}.", exc.status)
        return PlainTextResponse(
            "Authorized: the gateway can reach the server now. You can close this window."
        )

    router.include_router(audit_api.audit_routes(audit))
    api.include_router(router)
    return api
