"""The set of live downstreams, kept equal to the servers the registry lists."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.abc
import grpc
import orjson

from services.connector.bulkheads import Capacity
from services.connector.downstream import Downstream, Heard, Inventory, Report, Status
from services.connector.errors import (
    DownstreamUnavailableError,
    MissingCredentialsError,
    NeedsConnectionError,
)
from services.connector.oauth import AuthorizationEndedError, NotAuthorizedError, TokenError, TokenSource
from services.contracts import registry_pb2, registry_pb2_grpc
from services.settings import ConnectorSettings

log = logging.getLogger(__name__)

# The deadline of an access token from registry: its token request (10 s at most), after
# waiting out another registry's refresh, or a lease that a dead one left (25 s at most).
ISSUE_SECONDS = 40.0

REPORT_DEADLINE_SECONDS = 10.0


class DownstreamPool:
    def __init__(
        self, settings: ConnectorSettings, registry: registry_pb2_grpc.RegistryStub, heard: Heard
    ) -> None:
        self._settings = settings
        self._heard = heard
        self._registry = registry
        self._running: dict[str, tuple[bytes, Downstream, anyio.CancelScope]] = {}
        # Each shared server's last report to registry, to send again if registry lost track.
        self._reported: dict[str, tuple[Status, Inventory]] = {}
        self._resending = False
        self._capacities: dict[str, Capacity] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._sync_lock = anyio.Lock()
        # The sessions of per_user servers, by (server, key id).
        self._keyed: dict[tuple[str, str], tuple[Downstream, anyio.CancelScope]] = {}
        # Held while an identity's per_user_oauth session opens, by (server, key id).
        self._opening: dict[tuple[str, str], anyio.Lock] = {}
        # The last failed opening of each identity's session: when, and what it raised.
        self._failed_open: dict[tuple[str, str], tuple[float, Exception]] = {}

    def servers(self) -> list[Downstream]:
        """The shared session of every configured server (not the per-key ones)."""
        return [entry[1] for entry in self._running.values()]

    def capacity(self, name: str) -> Capacity | None:
        """The server's bulkhead as registry last said (None: unlimited)."""
        return self._capacities.get(name)

    def get(self, name: str) -> Downstream | None:
        entry = self._running.get(name)
        return None if entry is None else entry[1]

    async def route(self, name: str, key_id: str) -> Downstream | None:
        """The session a caller's requests to `name` go to: the server's own, or for a
        per_user server the caller's key's (opened on first use, and waited for)."""
        shared = self.get(name)
        if shared is None:
            return None
        if shared.config.per_user_oauth:
            return await self._user_session(shared, key_id)
        if not shared.config.per_user:
            if not shared.connected:
                await shared.settled(self._settings.connect_timeout_seconds)
            return shared
        if key_id not in shared.config.key_headers:
            raise MissingCredentialsError(
                name,
                f"server {name!r} needs your own credentials: ask an administrator to set them for your key",
            )
        entry = self._keyed.get((name, key_id))
        if entry is None:
            config = registry_pb2.ServerConfig()
            config.CopyFrom(shared.config)
            config.headers.update(shared.config.key_headers[key_id].headers)
            config.key_headers.clear()
            entry = self._keyed[(name, key_id)] = (self._downstream(config, quiet=True), anyio.CancelScope())
            assert self._tg is not None, "run() first"
            self._tg.start_soon(self._supervise, *entry)
        entry[0].idle_since = time.monotonic()
        await entry[0].ready(self._settings.connect_timeout_seconds)
        return entry[0]

    async def _user_session(self, shared: Downstream, key_id: str) -> Downstream:
        """The identity's own session with a per_user_oauth server, on the access tokens
        registry issues on its grant (opened on first use); NeedsConnectionError until it has one."""
        name = shared.name
        if not key_id:
            raise NeedsConnectionError(name, f"server {name!r} needs your own account: sign in first")
        entry = self._keyed.get((name, key_id))
        if entry is not None and entry[0].credentials is not None and entry[0].credentials.ended:
            # The upstream refused the grant (registry dropped it): the account must be connected anew.
            self.disconnect(name, key_id)
            entry = None
        if entry is None:
            # One opening per identity, so its first calls share one session; calls that
            # waited on an opening that failed fail with it, rather than each trying again.
            waited_from = time.monotonic()
            async with self._opening.setdefault((name, key_id), anyio.Lock()):
                entry = self._keyed.get((name, key_id))
                failed = self._failed_open.get((name, key_id))
                if entry is None and failed is not None and failed[0] >= waited_from:
                    raise failed[1]
                if entry is None:
                    try:
                        entry = await self._open_user_session(shared, key_id)
                    except Exception as exc:
                        self._failed_open[(name, key_id)] = (time.monotonic(), exc)
                        raise
                    self._failed_open.pop((name, key_id), None)
        entry[0].idle_since = time.monotonic()
        await entry[0].ready(self._settings.connect_timeout_seconds)
        return entry[0]

    async def _open_user_session(
        self, shared: Downstream, key_id: str
    ) -> tuple[Downstream, anyio.CancelScope]:
        name = shared.name
        credentials = self._token_source(shared.config, key_id)
        try:
            # At once, so a missing or dead authorization is told as such, not as a failed connection.
            await credentials.token()
        except AuthorizationEndedError:
            raise _ended(name) from None
        except NotAuthorizedError:
            raise NeedsConnectionError(
                name, f"server {name!r} needs your own account: connect it, then call again"
            ) from None
        except TokenError as exc:
            raise DownstreamUnavailableError(name, str(exc)) from None
        downstream = self._downstream(shared.config, quiet=True, credentials=credentials)
        entry = self._keyed[(name, key_id)] = (downstream, anyio.CancelScope())
        assert self._tg is not None, "run() first"
        self._tg.start_soon(self._supervise, *entry)
        return entry

    def failed(self, downstream: Downstream, key_id: str, exc: Exception) -> Exception:
        """What a call that failed on `downstream` failed of: for an identity whose grant the
        upstream just refused, NeedsConnectionError (its session closed now, if registry's
        word of the disconnect has not closed it already)."""
        credentials = downstream.credentials
        if credentials is None or not credentials.ended:
            return exc
        entry = self._keyed.get((downstream.name, key_id))
        if entry is not None and entry[0] is downstream:
            self.disconnect(downstream.name, key_id)
        return _ended(downstream.name)

    def _token_source(self, config: registry_pb2.ServerConfig, key_id: str) -> TokenSource:
        """The tokens of a server's session as an identity (`key_id`; "" the operator's, once
        authorized): a person's grant stays in registry, which issues its access tokens."""
        name = config.name
        if config.oauth.grant_type != "authorization_code" or not (key_id or config.oauth.authorized_at):
            return TokenSource(name, config.oauth)

        async def issue(stale: str) -> tuple[str, float]:
            request = registry_pb2.AccessTokenRequest(server=name, key_id=key_id, stale=stale)
            try:
                token = await self._registry.IssueAccessToken(request, timeout=ISSUE_SECONDS)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise AuthorizationEndedError(exc.details() or "") from None
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise NotAuthorizedError(exc.details() or "") from None
                raise TokenError(f"server {name!r}: registry: {exc.details() or exc.code().name}") from None
            return token.access_token, token.refresh_in_seconds

        return TokenSource(name, config.oauth, issue)

    def disconnect(self, name: str, key_id: str) -> None:
        """Close an identity's session with a server (its token is gone)."""
        entry = self._keyed.pop((name, key_id), None)
        if entry is not None:
            log.info("server %s: closing the session of key %s, which disconnected", name, key_id)
            entry[1].cancel()

    def _stop(self, name: str) -> None:
        """Close a server's session, and its keys' sessions."""
        self._running.pop(name)[2].cancel()
        self._reported.pop(name, None)
        for key in [k for k in self._keyed if k[0] == name]:
            self._keyed.pop(key)[1].cancel()
        for key in [k for k in self._failed_open if k[0] == name]:
            del self._failed_open[key]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await self._evict_idle_keys()

    async def _evict_idle_keys(self) -> None:
        """Close the per-key sessions nobody used for `keyed_idle_seconds` (a key that calls
        again gets a new one): otherwise every key that ever called holds one forever."""
        idle_for = self._settings.keyed_idle_seconds
        while True:
            await anyio.sleep(min(60.0, idle_for / 4))
            horizon = time.monotonic() - idle_for
            for key, (downstream, scope) in list(self._keyed.items()):
                if downstream.idle and downstream.idle_since < horizon:
                    log.info("server %s: closing the idle session of key %s", key[0], key[1])
                    del self._keyed[key]
                    scope.cancel()

    async def sync(self) -> None:
        """Start servers the registry added or changed, stop those it removed."""
        async with self._sync_lock:
            # wait_for_ready: at start-up the registry may not be listening yet.
            response = await self._registry.ListServers(
                registry_pb2.ListServersRequest(), timeout=10, wait_for_ready=True
            )
            wanted = {s.name: s for s in response.servers}
            self._capacities = {name: c for name, s in wanted.items() if (c := _capacity(s.limits))}
            for name in list(self._running):
                fingerprint = _fingerprint(wanted[name]) if name in wanted else None
                if fingerprint != self._running[name][0]:
                    log.info("server %s removed or changed: closing its session", name)
                    self._stop(name)
            for name, config in wanted.items():
                if name not in self._running:
                    self._start(config)

    async def reconnect(self, name: str) -> None:
        """Close a server's session and open a new one (an operator asked for it)."""
        async with self._sync_lock:
            known = name in self._running
            if known:
                log.info("server %s: reconnecting on request", name)
                self._stop(name)
        if known:
            await self.sync()

    def _downstream(
        self, config: registry_pb2.ServerConfig, quiet: bool = False, credentials: TokenSource | None = None
    ) -> Downstream:
        """A server's session; a `quiet` one (a key's own) does not speak for the server to registry."""
        return Downstream(
            config,
            _silent if quiet else self._reporter(config.name),
            self._heard,
            call_timeout=self._settings.call_timeout_seconds,
            connect_timeout=self._settings.connect_timeout_seconds,
            backoff_initial=self._settings.reconnect_initial_seconds,
            backoff_max=self._settings.reconnect_max_seconds,
            credentials=credentials,
        )

    def _start(self, config: registry_pb2.ServerConfig) -> None:
        assert self._tg is not None, "run() first"
        shared = config
        if config.per_user and config.key_headers:
            # The catalog (tools, prompts, ...) is learned with the first key's credentials.
            shared = registry_pb2.ServerConfig()
            shared.CopyFrom(config)
            shared.headers.update(config.key_headers[min(config.key_headers)].headers)
        # One token source for the server's life: a reconnect goes on its cached token.
        credentials = self._token_source(shared, "") if shared.HasField("oauth") else None
        downstream = self._downstream(shared, credentials=credentials)
        scope = anyio.CancelScope()
        self._running[config.name] = (_fingerprint(config), downstream, scope)
        self._tg.start_soon(self._supervise, downstream, scope)

    @staticmethod
    async def _supervise(downstream: Downstream, scope: anyio.CancelScope) -> None:
        with scope:
            await downstream.run()

    async def report_again(self) -> None:
        """Send registry each server's last report again (it had counted this replica lost);
        one round at a time, each server's report read as it is sent."""
        if self._resending:
            return
        self._resending = True
        try:
            for server in list(self._reported):
                last = self._reported.get(server)
                if last is not None and server in self._running:
                    await self._reporter(server)(*last)
        finally:
            self._resending = False

    def _reporter(self, server: str) -> Report:
        async def report(status: Status, inventory: Inventory) -> None:
            self._reported[server] = (status, inventory)
            request = registry_pb2.ReportCatalogRequest(
                server=server,
                state=status.state,
                error=status.error,
                attempts=status.attempts,
                next_attempt_unix=status.next_attempt_unix,
                tools_json=[orjson.dumps(t) for t in inventory.tools],
                prompts_json=[orjson.dumps(p) for p in inventory.prompts],
                resources_json=[orjson.dumps(r) for r in inventory.resources],
                resource_templates_json=[orjson.dumps(t) for t in inventory.resource_templates],
                capabilities_json=orjson.dumps(inventory.capabilities),
                instructions=inventory.instructions,
                connector_id=self._settings.connector_id,
            )
            delay = 0.2
            with anyio.move_on_after(REPORT_DEADLINE_SECONDS):
                while True:
                    try:
                        # Shielded: a report cut off mid-RPC by a restart left the next one hanging.
                        with anyio.CancelScope(shield=True):
                            await self._registry.ReportCatalog(request, timeout=5, wait_for_ready=True)
                        return
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() == grpc.StatusCode.NOT_FOUND:
                            return  # the server was removed meanwhile; sync() will stop it
                        log.debug("report for %s failed: %s", server, exc.details())
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            log.warning("could not report %s as %s to the registry", server, status.state)

        return report


async def _silent(status: Status, inventory: Inventory) -> None:
    """A key's own session says nothing to registry: the server's shared session does."""


def _ended(server: str) -> NeedsConnectionError:
    return NeedsConnectionError(
        server, f"server {server!r}: your authorization there ended (revoked or expired): connect again"
    )


def _fingerprint(config: registry_pb2.ServerConfig) -> bytes:
    """What a server's session depends on: its config less its limits (a changed limit
    takes effect at once, without a reconnect)."""
    bare = registry_pb2.ServerConfig()
    bare.CopyFrom(config)
    bare.ClearField("limits")
    return bare.SerializeToString(deterministic=True)


def _capacity(limits: registry_pb2.Limits) -> Capacity | None:
    if limits.max_concurrency <= 0:
        return None
    return Capacity(limits.max_concurrency, limits.max_queue, limits.queue_timeout_seconds or 30.0)
