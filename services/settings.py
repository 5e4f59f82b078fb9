"""Settings of each service, read from flags and `MCPGW_*` environment variables.

A service that is missing a setting it needs, or given one it cannot use, fails at
start-up with a message naming the variable (see `load`).
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".state")
# How often an audit consumer that has caught up fetches. A batch costs the store about 1 ms
# of CPU whatever its size: at c=32, 100 ms instead of 50 ms takes the audit from about 0.23
# to 0.16 ms of CPU per call, and 50 ms keeps the export lag's p99 under 100 ms (72-82 ms
# measured).
AUDIT_GATHER_SECONDS = 0.05


class ConfigurationError(Exception):
    """A service was started with missing or invalid configuration."""


class LogFormat(StrEnum):
    """How a service writes its log: a line of text, or a JSON object, per record."""

    TEXT = "text"
    JSON = "json"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCPGW_", extra="ignore")

    # One NATS node, or every node of a cluster, comma-separated.
    nats_url: str = "nats://127.0.0.1:4222"
    # How many NATS nodes keep each stream and key-value bucket: 3 on a cluster of three, so
    # the audit and the shared state survive the loss of one.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # How long a call may take when its server sets no timeout: the edge sends each call's
    # timeout to the connector and bounds the RPC by it; the connector enforces it.
    call_timeout_seconds: float = 60.0
    # host:port where the service's metrics are served as Prometheus text; empty serves none
    # (the edge serves them at /metrics on its own port).
    metrics_listen: str = ""
    # A directory: trace the heap and write a snapshot there on each SIGUSR1 (services/heap.py;
    # for measuring only, it slows the service several-fold). Empty traces nothing.
    heap_dir: str = ""


class RegistrySettings(CommonSettings):
    registry_listen: str = "127.0.0.1:50051"
    config: Path | None = None
    db: str = ""
    state_dir: Path = DEFAULT_STATE_DIR
    # Seals server configs (they hold upstream credentials) at rest; empty keeps one in
    # the state directory. Every registry replica needs the same one.
    registry_key: str = ""
    # A connector replica silent this long no longer counts as holding any server: a server
    # only it held is disconnected for clients.
    connector_lost_seconds: float = Field(default=6.0, gt=0)

    def database_url(self) -> str:
        """The SQLAlchemy URL: `--db` when given, else SQLite under the state directory."""
        if self.db:
            return self.db
        return f"sqlite+aiosqlite:///{(self.state_dir / 'registry.db').resolve()}"


class ConnectorSettings(CommonSettings):
    connector_listen: str = "127.0.0.1:50052"
    registry_addr: str = "127.0.0.1:50051"
    # Names this replica to registry (which counts a server connected while any replica holds it).
    connector_id: str = Field(default_factory=lambda: f"connector-{secrets.token_hex(4)}")
    connect_timeout_seconds: float = 30.0
    reconnect_initial_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    # How often this replica tells registry it is alive (registry's connector_lost_seconds
    # should be a few of these).
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    # A virtual key's own session with a per_user server closes after this long unused.
    keyed_idle_seconds: float = 900.0


class AuditDelivery(StrEnum):
    """When a call's audit record must be stored: before its answer goes out, or soon after."""

    CONFIRMED = "confirmed"
    BATCHED = "batched"


class EdgeSettings(CommonSettings):
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    registry_addr: str = "127.0.0.1:50051"
    connector_addr: str = "127.0.0.1:50052"
    # Long-lived gRPC streams that carry the unary tool calls to connectors, many per message
    # (0: a unary RPC per call). With several connector replicas, at least as many.
    connector_streams: int = Field(default=2, ge=0)
    # The audit service, which answers /api/audit and /api/usage.
    audit_addr: str = "127.0.0.1:50053"
    # HMAC key shared by all edges so any replica accepts any session; a process
    # without one signs with a random key and its sessions die with it.
    session_secret: str = ""
    session_ttl_seconds: int = 24 * 3600
    max_body_bytes: int = 4 * 1024 * 1024
    # How long a request's headers may take to arrive before the connection is closed (408).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Connections the kernel queues before the edge accepts them (capped by net.core.somaxconn):
    # uvicorn's 2048 dropped most of a 10,000-connection burst (make bench-scale).
    listen_backlog: int = Field(default=16384, gt=0)
    # Names this replica in NATS subjects and in the ids it mints: unique per replica.
    edge_id: str = Field(default_factory=lambda: f"edge-{secrets.token_hex(4)}", pattern=r"^[A-Za-z0-9_-]+$")
    snapshot_poll_seconds: float = 30.0
    keepalive_seconds: float = 15.0
    # How long the events of SSE answers stay resumable with Last-Event-ID.
    event_retention_seconds: float = 600.0
    # And at most this much of them (the stream lives in NATS's memory, which holds about 4x
    # what it stores: this keeps NATS near 130 MiB; the oldest go first).
    event_retention_bytes: int = 32 * 1024 * 1024
    # Bearer token of the management API under /api/; empty turns the API off.
    admin_token: str = ""
    # How long a call a 2026-07-28 client must answer (sampling, elicitation) waits for its retry.
    input_wait_seconds: float = 300.0
    # confirmed: a call's answer waits until JetStream stores its audit record (no answered
    # call escapes the audit, whatever dies next); batched: records go out every 50 ms after
    # the answer (cheaper: a killed edge loses up to 50 ms of them).
    audit_delivery: AuditDelivery = AuditDelivery.CONFIRMED
    # How long an answer waits for that (while JetStream is away, answers are late by this
    # much and their records stay spooled).
    audit_confirm_seconds: float = Field(default=2.0, ge=0)
    # Origins allowed besides localhost ones (DNS-rebinding protection), comma-separated.
    allowed_origins: str = ""
    # Host names allowed besides loopback ones, comma-separated; "*" allows any. Empty means
    # loopback only while the edge listens on loopback, and any host when it listens wider.
    allowed_hosts: str = ""
    # Record tool calls' arguments and results in their audit records and spans (off: they
    # may carry personal data), with the values of these object keys redacted.
    trace_payloads: bool = False
    trace_redact: str = "authorization,password,passwd,secret,token,access_token,api_key,apikey"
    # Where clients reach the gateway (e.g. https://mcp.example.com), naming the OAuth issuer
    # and resources; empty: the scheme and Host each request came by.
    public_url: str = ""
    # Lifetimes of the access tokens the edge issues, and of their grants' refresh tokens.
    oauth_access_token_seconds: int = Field(default=600, gt=0)
    oauth_refresh_token_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    # Fetch Client ID Metadata Documents from hosts on loopback or private addresses too
    # (off: a client id could otherwise make the edge probe its own network).
    oauth_client_documents_private: bool = False
    # An OpenID Connect provider people may sign in with at the consent page, instead of
    # presenting a virtual key: they act as the key whose `identities` name their claim. The
    # gateway is registered there as a confidential client whose redirect URI is
    # <public URL>/oauth/oidc/callback.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    # The ID token claim matched against keys' identities, and the scopes asked for it.
    oidc_claim: str = "email"
    oidc_scopes: str = "openid email"
    # The sign-in button's label ("Sign in with <name>"); empty: the issuer's host.
    oidc_name: str = ""
    # Who may sign in to the console (/ui) with that provider, by the same claim: addresses
    # or "*@domain", comma-separated. Admins change things; viewers only look.
    console_admins: str = ""
    console_viewers: str = ""
    # What one Code Mode script may use: wall time, time running (waits for tools apart),
    # heap, call depth, tool calls, and printed output plus its value; and how many
    # sandbox workers run scripts at once.
    code_mode_wall_seconds: float = Field(default=60.0, gt=0, le=3600)
    code_mode_cpu_seconds: float = Field(default=10.0, gt=0, le=3600)
    code_mode_memory_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    code_mode_recursion_depth: int = Field(default=200, ge=10, le=10_000)
    code_mode_tool_calls: int = Field(default=100, ge=1, le=100_000)
    code_mode_result_bytes: int = Field(default=256 * 1024, ge=1024)
    code_mode_workers: int = Field(default=4, ge=1, le=64)
    # How long a call that needs a person's approval waits for one before it is refused.
    approval_timeout_seconds: float = Field(default=120.0, gt=0, le=24 * 3600)


class AuditSettings(CommonSettings):
    # console | file | otlp; otlp is chosen when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    audit_exporter: Literal["console", "file", "otlp", ""] = ""
    audit_file: Path = DEFAULT_STATE_DIR / "audit" / "spans.jsonl"
    audit_batch: int = 256
    audit_gather_seconds: float = Field(default=AUDIT_GATHER_SECONDS, ge=0, le=5)
    audit_durable: str = "mcpgw-audit"
    state_dir: Path = DEFAULT_STATE_DIR
    # The queryable store (a SQLAlchemy URL); empty: SQLite under the state directory.
    audit_db: str = ""
    # This replica's hash chain in the store: every audit replica needs its own.
    audit_chain: str = Field(default="audit", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Records older than this many days are removed from the store (0 keeps them all).
    audit_retention_days: float = Field(default=90.0, ge=0)
    audit_listen: str = "127.0.0.1:50053"

    def database_url(self) -> str:
        if self.audit_db:
            return self.audit_db
        return f"sqlite+aiosqlite:///{self.state_dir / 'audit' / 'audit.db'}"


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment plus explicit overrides (CLI flags)."""
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"MCPGW_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid {cls.__name__}: {problems}") from None
