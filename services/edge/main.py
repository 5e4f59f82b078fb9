"""Entry point of the edge service."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets

import anyio
import anyio.abc
import orjson
import uvicorn
from nats.aio.msg import Msg

from services import bus
from services.contracts import audit_pb2_grpc, registry_pb2_grpc
from services.edge.admin import Guesses, create_admin_api
from services.edge.admission import Admission
from services.edge.app import EdgeComponents, create_app
from services.edge.approvals import Approvals
from services.edge.auditing import AuditPublisher
from services.edge.background import Background
from services.edge.catalog import Catalog, changed_lists
from services.edge.codemode.sandbox import Sandbox, SandboxLimits
from services.edge.connector_client import ConnectorClient
from services.edge.console import create_console
from services.edge.console.signouts import SignOuts
from services.edge.eventlog import EventLog
from services.edge.execution import ToolExecution
from services.edge.identity.client_metadata import ClientDocuments
from services.edge.identity.connections import Connections, elicitation_id
from services.edge.identity.consent import Consent
from services.edge.identity.credentials import Credentials
from services.edge.identity.endpoints import OAuthEndpoints
from services.edge.identity.oidc import OidcConfig, OpenIDProvider
from services.edge.identity.state import OAuthState, Sealer
from services.edge.identity.tokens import AccessTokens
from services.edge.inputs import InputRounds
from services.edge.legacy import LegacySseEndpoint
from services.edge.limits.limiter import Limiter
from services.edge.limits.quota import QuotaStore
from services.edge.meters import EdgeMeters
from services.edge.modern import ModernEndpoint
from services.edge.multiplexing import CallMux
from services.edge.peers import Peers
from services.edge.protocol import McpHandler
from services.edge.records import Payloads
from services.edge.server import with_header_timeout
from services.edge.session_state import SessionState
from services.edge.sessions import SessionCodec
from services.edge.signing import Signer
from services.edge.snapshot import SnapshotFollower
from services.edge.streams import StreamHub
from services.edge.tasks import TaskIds
from services.edge.transport import StreamableHttpEndpoint
from services.metrics import service_metrics
from services.rpc import channel
from services.runtime import started
from services.settings import EdgeSettings

log = logging.getLogger(__name__)

FIRST_SNAPSHOT_SECONDS = 10.0

AUDIT_FLUSH_SECONDS = 5.0


async def serve(settings: EdgeSettings) -> None:
    if not settings.session_secret:
        log.warning("MCPGW_SESSION_SECRET is not set: sessions are valid on this edge process only")

    async def streams() -> None:
        replicas = settings.nats_replicas
        await bus.ensure_audit_stream(nc, replicas)
        await bus.ensure_events_stream(
            nc, settings.event_retention_seconds, settings.event_retention_bytes, replicas
        )

    reconnected = bus.ChangeSignal()

    async def on_reconnect() -> None:
        audit.reconnected()
        reconnected.set()
        state.reconnected()
        oauth_state.reconnected()
        signouts.reconnected()

    async def restore_streams(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """After each reconnect: NATS may have restarted without what it held in memory (the
        events stream), or be electing leaders (a node died): create them until it works."""
        task_status.started()
        while True:
            await reconnected.wait(math.inf)
            await bus.retrying("restoring the JetStream streams after reconnecting", streams)

    nc = await bus.connect(settings.nats_url, f"mcpgw-{settings.edge_id}", on_reconnect=on_reconnect)
    await bus.retrying("creating the JetStream streams", streams)
    registry_channel = channel(settings.registry_addr)
    connector_channel = channel(settings.connector_addr)
    mux = CallMux(connector_channel, settings.connector_streams) if settings.connector_streams else None
    hub = StreamHub()
    background = Background()
    metrics = service_metrics("mcpgw-edge")
    meters = EdgeMeters(metrics)
    audit = AuditPublisher(nc, settings.audit_confirm_seconds, settings.audit_delivery, meters.observe)

    async def on_change(previous: Catalog, current: Catalog) -> None:
        def changed(endpoint: str, key_id: str) -> set[str] | None:
            now = current.view_of(endpoint, key_id)
            return None if now is None else changed_lists(previous.view_of(endpoint, key_id), now)

        hub.list_changed(changed)

    registry = registry_pb2_grpc.RegistryStub(registry_channel)
    follower = SnapshotFollower(registry, settings.snapshot_poll_seconds, on_change)
    await nc.subscribe(bus.REGISTRY_CHANGED, cb=follower.changed.on_message)
    peers = Peers(nc, settings.edge_id, settings.input_wait_seconds)
    state = SessionState(nc, settings.session_ttl_seconds, settings.nats_replicas)
    signer = Signer(settings.session_secret)
    task_ids = TaskIds(signer)
    access_tokens = AccessTokens(settings.session_secret, settings.oauth_access_token_seconds)
    oauth_state = OAuthState(
        nc,
        Sealer(settings.session_secret),
        settings.oauth_access_token_seconds,
        settings.oauth_refresh_token_seconds,
        settings.nats_replicas,
    )
    admission = Admission(
        settings.max_body_bytes,
        _names(settings.allowed_origins),
        _allowed_hosts(settings),
        Credentials(access_tokens, oauth_state.is_revoked, settings.public_url),
    )
    connections = Connections(signer, registry, admission, lambda: follower.catalog, settings.public_url)
    limiter = Limiter(QuotaStore(nc, settings.nats_replicas), lambda: follower.catalog)
    sandbox = Sandbox(
        SandboxLimits(
            wall_seconds=settings.code_mode_wall_seconds,
            cpu_seconds=settings.code_mode_cpu_seconds,
            memory_bytes=settings.code_mode_memory_bytes,
            recursion_depth=settings.code_mode_recursion_depth,
            tool_calls=settings.code_mode_tool_calls,
            result_bytes=settings.code_mode_result_bytes,
        ),
        settings.code_mode_workers,
    )
    approvals = Approvals(nc, settings.edge_id, settings.approval_timeout_seconds, settings.nats_replicas)
    handler = McpHandler(
        ConnectorClient(connector_channel, mux=mux),
        audit,
        settings.edge_id,
        peers,
        state,
        timeout=lambda server, tool: follower.catalog.call_timeout(
            server, tool, settings.call_timeout_seconds
        ),
        task_ids=task_ids,
        payloads=Payloads(settings.trace_payloads, _names(settings.trace_redact)),
        price=lambda server, tool: follower.catalog.price(server, tool),
        connections=connections,
        limiter=limiter,
        sandbox=sandbox,
        approvals=approvals,
        needs_approval=lambda key_id, server, tool: follower.catalog.needs_approval(key_id, server, tool),
    )

    async def on_resource_updated(msg: Msg) -> None:
        update = orjson.loads(msg.data)
        server, uri = update["server"], update["params"]["uri"]
        hub.resource_updated(server, uri, state.subscribers(server, uri))

    async def on_task_status(msg: Msg) -> None:
        # Only the task's owner hears of it, on its session's streams, under its own task id.
        update = orjson.loads(msg.data)
        server, params = update["server"], update["params"]
        owner = state.task_owner(server, str(params.get("taskId")))
        if owner is None or not owner.startswith("s:"):
            return
        shown = {**params, "taskId": task_ids.expose(server, params["taskId"], owner)}
        notification = {"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": shown}
        hub.tell_session(owner[len("s:") :], orjson.dumps(notification))

    async def on_user_connected(msg: Msg) -> None:
        connected = orjson.loads(msg.data)
        hub.elicitation_complete(connected["key_id"], connected["server"], elicitation_id)

    await nc.subscribe(bus.USER_CONNECTED, cb=on_user_connected)
    await nc.subscribe(bus.RESOURCE_UPDATED, cb=on_resource_updated)
    await nc.subscribe(bus.TASK_STATUS, cb=on_task_status)
    rounds = InputRounds(settings.edge_id, signer, settings.input_wait_seconds)
    sessions = SessionCodec(signer, settings.session_ttl_seconds, state.is_ended)
    endpoint = StreamableHttpEndpoint(
        handler,
        lambda: follower.catalog,
        sessions,
        hub,
        admission,
        EventLog(nc, settings.keepalive_seconds),
        background,
        keepalive_seconds=settings.keepalive_seconds,
    )
    legacy = LegacySseEndpoint(
        handler,
        lambda: follower.catalog,
        hub,
        admission,
        peers,
        keepalive_seconds=settings.keepalive_seconds,
        session_ttl_seconds=settings.session_ttl_seconds,
    )
    await peers.serve(handler.calls.reply, rounds.carry_on, legacy.deliver, handler.calls.cancel)
    audit_channel = channel(settings.audit_addr)
    # The console's own credential for the API, in this process only (never shown or sent).
    console_token = secrets.token_urlsafe(32)
    provider = _sign_in_provider(settings)
    # Wrong admin tokens, counted across the API and the console's sign-in.
    guesses = Guesses()
    # Console sign-outs, heard by every edge.
    signouts = SignOuts(nc, settings.nats_replicas)
    admin = create_admin_api(
        registry,
        nc,
        settings.admin_token,
        audit_pb2_grpc.AuditStub(audit_channel),
        settings.public_url,
        follower.refresh,
        limiter,
        approvals,
        console_token,
        guesses,
    )
    modern = ModernEndpoint(
        handler,
        lambda: follower.catalog,
        admission,
        rounds,
        peers,
        hub,
        background,
        settings.keepalive_seconds,
    )
    meters.held(
        calls=lambda: len(handler.calls),
        streams=lambda: hub.open_streams,
        sessions=lambda: sessions.issued,
        spooled=lambda: audit.backlog,
    )
    oauth = OAuthEndpoints(
        oauth_state,
        access_tokens,
        Consent(oauth_state, signer, lambda: follower.catalog, provider),
        lambda: follower.catalog,
        admission,
        ClientDocuments(settings.oauth_client_documents_private),
        settings.public_url,
    )
    execution = ToolExecution(handler, lambda: follower.catalog, admission)
    parts = EdgeComponents(
        endpoint,
        modern,
        legacy,
        admin,
        oauth,
        connections,
        admission,
        execution,
        follower,
        audit,
        hub,
        metrics,
        create_console(
            admin,
            settings.admin_token,
            console_token,
            settings.session_secret,
            lambda: follower.catalog,
            handler,
            provider,
            settings.console_admins,
            settings.console_viewers,
            settings.public_url,
            guesses,
            signouts,
        ),
    )
    app = create_app(parts)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.edge_host,
            port=settings.edge_port,
            http=with_header_timeout(settings.header_timeout_seconds),
            backlog=settings.listen_backlog,
            lifespan="off",
            access_log=False,
            log_level=settings.log_level.lower(),
            # The service's own logging (text or JSON, with trace ids), not uvicorn's.
            log_config=None,
            timeout_graceful_shutdown=5,
        )
    )
    async with sandbox, mux or contextlib.nullcontext(), anyio.create_task_group() as tg:
        await tg.start(follower.run)
        # Listen once the catalog is loaded, so a restarted edge never answers "Unknown tool"
        # for the tools it has not read yet (registry away: serve what there is after a while).
        with anyio.move_on_after(FIRST_SNAPSHOT_SECONDS):
            await follower.loaded.wait()
        await tg.start(audit.run)
        await tg.start(restore_streams)
        await tg.start(state.run)
        await tg.start(oauth_state.run)
        await tg.start(limiter.run)
        await tg.start(approvals.run)
        await tg.start(signouts.run)
        await tg.start(background.run)
        # uvicorn handles SIGINT/SIGTERM itself and returns from serve().
        started()
        await server.serve()
        await rounds.close()
        await background.stop()
        await audit.flush(AUDIT_FLUSH_SECONDS)
        tg.cancel_scope.cancel()
    if audit.backlog:
        log.error("%d audit events could not be published before shutdown", audit.backlog)
    await nc.drain()
    await registry_channel.close()
    await connector_channel.close()
    await audit_channel.close()
    metrics.shutdown()


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip().lower() for n in text.split(",") if n.strip())


def _allowed_hosts(settings: EdgeSettings) -> frozenset[str] | None:
    """The Host names to admit besides loopback ones; None admits any."""
    hosts = _names(settings.allowed_hosts)
    if "*" in hosts or (not hosts and settings.edge_host not in ("127.0.0.1", "localhost", "::1")):
        return None
    return hosts


def _sign_in_provider(settings: EdgeSettings) -> OpenIDProvider | None:
    config = OidcConfig.from_settings(settings)
    return OpenIDProvider(config) if config is not None else None
