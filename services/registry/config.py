"""The gateway config file: Bifrost's `mcp.client_configs` shape, accepted as is.

Unknown top-level sections (providers, plugins, ...) are ignored so a whole Bifrost
`config.json` loads; mcpgw's own settings sit under `mcpgw`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.contracts import registry_pb2
from services.naming import server_name_problem
from services.references import ENV_PREFIX
from services.settings import ConfigurationError
from services.tool_modes import ToolModeName
from services.windows import Window

# An HTTP header name (RFC 9110 token), and what no header value or URL may hold.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number of seconds or a Go-style duration such as "30s" or "500ms"."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 30, '30s' or '500ms'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


class RateLimitConfig(BaseModel):
    """Bifrost's rate_limit: calls per window (its token limits do not apply to tool calls)."""

    model_config = ConfigDict(extra="ignore")

    request_max_limit: int = Field(ge=1)
    request_reset_duration: str = "1m"

    @field_validator("request_reset_duration")
    @classmethod
    def _window(cls, value: str) -> str:
        Window.parse(value)
        return value


class BudgetConfig(BaseModel):
    """Bifrost's budget: money per window, spent at the tools' tool_pricing."""

    model_config = ConfigDict(extra="ignore")

    max_limit: float = Field(gt=0, allow_inf_nan=False)
    reset_duration: str = "1M"
    calendar_aligned: bool = False

    @field_validator("reset_duration")
    @classmethod
    def _window(cls, value: str) -> str:
        Window.parse(value)
        return value


class LimitsConfig(BaseModel):
    """The limits a key or a server carries in the config file (all optional)."""

    model_config = ConfigDict(extra="ignore")

    rate_limit: RateLimitConfig | None = None
    # mcpgw: calls per window of one tool (exposed name on a key, the server's name on a server).
    tool_rate_limits: dict[str, RateLimitConfig] = {}
    # mcpgw: calls in flight at once, and how many wait (for how long) beyond that.
    max_concurrency: int = Field(default=0, ge=0)
    max_queue: int = Field(default=0, ge=0)
    queue_timeout: float = 30.0

    @field_validator("queue_timeout", mode="before")
    @classmethod
    def _queue_timeout(cls, value: Any) -> Any:
        return parse_duration(value)


def limits_message(config: LimitsConfig, budget: BudgetConfig | None = None) -> registry_pb2.Limits:
    def request(limit: RateLimitConfig) -> registry_pb2.RequestLimit:
        return registry_pb2.RequestLimit(
            max_requests=limit.request_max_limit, reset_duration=limit.request_reset_duration
        )

    limits = registry_pb2.Limits(
        tool_rate_limits={tool: request(limit) for tool, limit in config.tool_rate_limits.items()},
        max_concurrency=config.max_concurrency,
        max_queue=config.max_queue,
        queue_timeout_seconds=config.queue_timeout,
    )
    if config.rate_limit is not None:
        limits.rate_limit.CopyFrom(request(config.rate_limit))
    if budget is not None:
        limits.budget.CopyFrom(
            registry_pb2.Budget(
                max_limit=budget.max_limit,
                reset_duration=budget.reset_duration,
                calendar_aligned=budget.calendar_aligned,
            )
        )
    return limits


AuthType = Literal["none", "headers", "oauth", "client_credentials", "per_user_oauth", "per_user_headers"]
# The auth types that take an oauth section.
OAUTH_TYPES = frozenset({"oauth", "client_credentials", "per_user_oauth"})


class StdioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1)
    args: list[str] = []
    # Bifrost lists names to inherit; a mapping sets values (which may be env.NAME).
    envs: list[str] | dict[str, str] = []
    cwd: str | None = None


class OAuthConfig(BaseModel):
    """OAuth 2.0 for a downstream: client credentials (the connector gets and refreshes the
    token), or authorization code with PKCE (a person authorizes through the gateway). For
    the latter, endpoints left out are discovered from the server (RFC 9728, RFC 8414) and a
    client id left out is registered (RFC 7591) when someone first authorizes."""

    model_config = ConfigDict(extra="forbid")

    grant_type: Literal["client_credentials", "authorization_code"] = "client_credentials"
    token_url: str = ""
    # Where people are sent to authorize (authorization_code only).
    authorize_url: str = ""
    client_id: str = ""
    # Write env.NAME to keep the secret out of the config; a public client may have none.
    client_secret: str = ""
    scope: str = ""
    # Where discovery starts (Bifrost's server_url): the server's own URL when left out.
    server_url: str = ""
    # Where to register the gateway when client_id is left out; discovered when left out too.
    registration_url: str = ""
    # The RFC 8707 resource indicator; the one the server's metadata names when left out.
    resource: str = ""
    # How the gateway authenticates at the token endpoint ("" is client_secret_basic, or what
    # registration settled on). With private_key_jwt, client_secret is the PEM private key.
    token_endpoint_auth_method: Literal[
        "", "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
    ] = ""

    @model_validator(mode="after")
    def _grant_fields(self) -> OAuthConfig:
        if self.grant_type == "client_credentials" and not (self.token_url and self.client_id):
            raise ValueError("the client_credentials grant needs token_url and client_id")
        if self.grant_type == "client_credentials" and not self.client_secret:
            raise ValueError("the client_credentials grant needs client_secret")
        return self

    @property
    def complete(self) -> bool:
        """Whether nothing is left to discover or register."""
        return bool(
            self.token_url
            and self.client_id
            and (self.authorize_url or self.grant_type != "authorization_code")
        )


# Bifrost's oauth_config fields that describe its own bookkeeping, not the upstream.
BIFROST_OAUTH_IGNORED = ("id", "redirect_uri", "use_discovery")


def bifrost_oauth(section: dict[str, Any]) -> dict[str, Any]:
    """Bifrost's oauth_config as an oauth section: the authorization code grant (an admin or
    each user authorizes), `scopes` as a scope string."""
    oauth = {k: v for k, v in section.items() if k not in BIFROST_OAUTH_IGNORED}
    oauth.setdefault("grant_type", "authorization_code")
    scopes = oauth.pop("scopes", None)
    if isinstance(scopes, list) and "scope" not in oauth:
        oauth["scope"] = " ".join(str(s) for s in scopes)
    return oauth


class ClientConfig(LimitsConfig):
    """One downstream MCP server (Bifrost calls it an MCP client), and its limits."""

    model_config = ConfigDict(extra="ignore")

    name: str
    connection_type: Literal["stdio", "http", "sse"]
    connection_string: str | None = None
    stdio_config: StdioConfig | None = None
    headers: dict[str, str] = {}
    # Bifrost semantics: ["*"] is every tool, [] or absent is none.
    tools_to_execute: list[str] = []
    tool_execution_timeout: float | None = None
    # mcpgw: per-tool overrides of tool_execution_timeout.
    tool_timeouts: dict[str, float] = {}
    # Bifrost: the cost of one call of each tool (a currency of your choosing); mcpgw reads
    # "*" as the price of the server's other tools.
    tool_pricing: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = {}
    # Bifrost: whether the server answers MCP ping (the health monitor pings only those).
    is_ping_available: bool = True
    # Each caller reaches the server with their own headers (set per key through the API):
    # what Bifrost's auth_type "per_user_headers" means.
    per_user: bool = False
    # Bifrost's auth_type. "oauth" (a person authorizes once, or client credentials),
    # "client_credentials" and "per_user_oauth" (each identity connects its own account)
    # need `oauth`; "per_user_headers" is `per_user`.
    auth_type: AuthType | None = None
    oauth: OAuthConfig | None = None
    disabled: bool = False
    # Bifrost: the server's tools are reached through Code Mode's meta-tools, not listed.
    is_code_mode_client: bool = False

    @field_validator("tool_execution_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="before")
    @classmethod
    def _oauth_section(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("oauth_config"), dict) and "oauth" not in value:
            # Bifrost's name and shape for it.
            value = {**value, "oauth": bifrost_oauth(value["oauth_config"])}
        value = {k: v for k, v in value.items() if k != "oauth_config"}
        if value.get("auth_type") in ("oauth", "per_user_oauth") and value.get("oauth") is None:
            # Bifrost's way: everything is discovered from the server, the client registered.
            value["oauth"] = {"grant_type": "authorization_code"}
        oauth = value.get("oauth")
        if (
            value.get("auth_type") == "per_user_oauth"
            and isinstance(oauth, dict)
            and "grant_type" not in oauth
        ):
            # Each identity authorizes in a browser: per_user_oauth's grant goes without saying.
            value["oauth"] = {**oauth, "grant_type": "authorization_code"}
        return value

    @field_validator("tool_timeouts", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {tool: parse_duration(timeout) for tool, timeout in value.items()}

    @field_validator("connection_string")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value.startswith(ENV_PREFIX):
            return value  # a reference: the connector checks the URL it names
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {value[:80]!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name[:80]!r} is not an HTTP header name")
            if _CONTROL.search(header):
                raise ValueError(f"the value of {name!r} must not contain control characters")
        return value

    @model_validator(mode="after")
    def _transport_fields(self) -> ClientConfig:
        if self.connection_type == "stdio" and self.stdio_config is None:
            raise ValueError("a stdio server needs stdio_config")
        if self.connection_type in ("http", "sse") and not self.connection_string:
            raise ValueError(f"an {self.connection_type} server needs connection_string (its URL)")
        if self.auth_type is not None and (self.auth_type in OAUTH_TYPES) != (self.oauth is not None):
            raise ValueError(
                f"auth_type {self.auth_type!r} goes with an oauth section only if it is one of "
                f"{', '.join(sorted(OAUTH_TYPES))}"
            )
        if self.auth_type == "per_user_headers":
            self.per_user = True
        elif self.per_user and self.auth_type not in (None, "headers"):
            raise ValueError(f"per_user is auth_type per_user_headers, not {self.auth_type!r}")
        grant = None if self.oauth is None else self.oauth.grant_type
        if self.auth_type == "client_credentials" and grant != "client_credentials":
            raise ValueError('auth_type "client_credentials" takes the client_credentials grant')
        if self.auth_type == "per_user_oauth" and grant != "authorization_code":
            raise ValueError('auth_type "per_user_oauth" takes the authorization_code grant')
        if (self.oauth is not None or self.per_user) and self.connection_type == "stdio":
            raise ValueError("oauth and per-user credentials are for http and sse servers")
        return self

    @property
    def per_user_oauth(self) -> bool:
        return self.auth_type == "per_user_oauth"


class HealthMonitorConfig(BaseModel):
    """Bifrost's mcp.health_monitor_config."""

    model_config = ConfigDict(extra="ignore")

    check_interval: float = 10.0
    check_timeout: float = 5.0
    max_consecutive_failures: int = Field(default=5, ge=1)

    @field_validator("check_interval", "check_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


class ToolManagerConfig(BaseModel):
    """Bifrost's mcp.tool_manager_config: what Code Mode's stub files hold."""

    model_config = ConfigDict(extra="ignore")

    code_mode_binding_level: Literal["server", "tool"] = "server"


class McpSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    client_configs: list[ClientConfig] = []
    health_monitor_config: HealthMonitorConfig = HealthMonitorConfig()
    tool_manager_config: ToolManagerConfig = ToolManagerConfig()


class GatewayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_separator: Literal["_", "-"] = "_"
    # Clearer name for Bifrost's client.enforce_governance_header; wins when both are set.
    require_key: bool | None = None
    # Reconnect a server that went away on our own (with backoff); off leaves it to
    # POST /api/mcp/client/{name}/reconnect, as Bifrost does.
    auto_reconnect: bool = True
    # How every view offers its tools; unset, as each key or group says.
    tool_mode: ToolModeName | None = None


class ToolSelectionConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mcp_client_name: str
    # Bifrost semantics: ["*"] is every tool, [] or absent is none.
    tools_to_execute: list[str] = []
    # Bifrost: of those, the ones that run without a person's approval (absent: all of them).
    tools_to_auto_execute: list[str] | None = None


class VirtualKeyConfig(LimitsConfig):
    """Bifrost's governance.virtual_keys entry, its rate limit and budget; providers are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    # The secret clients present; only its hash is stored.
    value: str = Field(min_length=16)
    description: str = ""
    is_active: bool = True
    mcp_configs: list[ToolSelectionConfig] = []
    # mcpgw's own: who signs in as this key with the operator's OpenID Connect provider.
    identities: list[str] = []
    # mcpgw's own: how the key's views offer tools (code: Code Mode's meta-tools; search:
    # searchTools and callTool).
    tool_mode: ToolModeName = "classic"
    budget: BudgetConfig | None = None


class GovernanceSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    virtual_keys: list[VirtualKeyConfig] = []


class ClientSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    enforce_governance_header: bool | None = None
    # How MCP clients authenticate: virtual keys in headers, OAuth tokens, or both.
    mcp_server_auth_mode: Literal["headers", "both", "oauth"] | None = None


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mcp: McpSection = McpSection()
    mcpgw: GatewayOptions = GatewayOptions()
    governance: GovernanceSection = GovernanceSection()
    client: ClientSection = ClientSection()

    @property
    def require_key(self) -> bool | None:
        """Whether requests need a key, when the file says (else the stored setting stands)."""
        if self.mcpgw.require_key is not None:
            return self.mcpgw.require_key
        return self.client.enforce_governance_header

    @model_validator(mode="after")
    def _server_names(self) -> GatewayConfig:
        seen: set[str] = set()
        for index, client in enumerate(self.mcp.client_configs):
            problem = server_name_problem(client.name, self.mcpgw.tool_separator)
            if problem:
                raise ValueError(f"mcp.client_configs[{index}].name {client.name!r} {problem}")
            if client.name in seen:
                raise ValueError(f"mcp.client_configs[{index}].name {client.name!r} is used twice")
            seen.add(client.name)
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_config(data: object, source: str = "config") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"{source}: {problems}") from None


def client_config(raw: bytes, separator: str) -> ClientConfig:
    """One server's config as the admin API sends it; ConfigurationError naming the field."""
    try:
        config = ClientConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(problems) from None
    problem = server_name_problem(config.name, separator)
    if problem:
        raise ConfigurationError(f"name: {config.name!r} {problem}")
    return config


def load_config(path: Path) -> GatewayConfig:
    """Read a JSON or YAML config file; every problem is a `ConfigurationError` naming the field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return parse_config(data, str(path))
