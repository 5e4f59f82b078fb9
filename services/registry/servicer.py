"""The Registry gRPC service: snapshots for edges, servers and catalog reports for connectors."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import orjson
from nats.aio.client import Client as NATS

from services import bus
from services.contracts import events_pb2, registry_pb2, registry_pb2_grpc
from services.naming import exposed_tool_name
from services.registry import redaction
from services.registry.access_tokens import AccessTokens, GrantEndedError, TokenUnavailableError
from services.registry.authorization import Authorizations, with_discovered
from services.registry.catalog import build_snapshot, server_config
from services.registry.config import client_config
from services.registry.governance import ConflictError, GovernanceStore, InvalidFieldError, MissingError
from services.registry.store import (
    RegistryStore,
    ReplicaReport,
    ServerExistsError,
    StoredItem,
    StoredServer,
    UnknownServerError,
    client_name,
    credentials_name,
    refresh_token_name,
)
from services.registry.user_tokens import Grant, UserTokens
from services.rpc import abort
from services.settings import ConfigurationError

log = logging.getLogger(__name__)

T = TypeVar("T")


STATES = frozenset({"connecting", "connected", "disconnected", "failed"})
# A replica silent this many lost intervals is forgotten, with what it reported.
FORGET_AFTER_LOST = 100


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(
        self,
        store: RegistryStore,
        nc: NATS,
        lost_seconds: float = 6.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._governance = GovernanceStore(store)
        self._user_tokens = UserTokens(store)
        self._authorizations = Authorizations(store, self._user_tokens)
        self._access_tokens = AccessTokens(self._user_tokens)
        self._nc = nc
        self._cached: registry_pb2.Snapshot | None = None
        # The last revision announced (a metric).
        self.revision = 0
        # What each connector replica reported of each server lives in the store, so every
        # registry replica counts the same: a server is connected while a replica heard from
        # within `lost_seconds` holds it.
        self._lost_seconds = lost_seconds
        self._clock = clock
        # Connectors that outlived a restart of this registry get a lost interval to say so.
        self._started = clock()

    async def announce(self, revision: int) -> None:
        """Tell every edge and connector that `revision` is committed."""
        self.revision = revision
        if self._nc.is_connected:
            await self._nc.publish(
                bus.REGISTRY_CHANGED, events_pb2.RegistryChanged(revision=revision).SerializeToString()
            )
        else:
            log.warning("revision %d not announced: NATS is down; edges will poll", revision)

    async def GetSnapshot(
        self, request: registry_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.Snapshot:
        revision = await self._store.revision()
        if request.known_revision and request.known_revision == revision:
            return registry_pb2.Snapshot(revision=revision, not_modified=True)
        if self._cached is None or self._cached.revision != revision:
            self._cached = build_snapshot(
                await self._store.catalog(),
                await self._governance.governance(),
                await self._governance.disabled_tools(),
            )
        return self._cached

    async def ListServers(
        self, request: registry_pb2.ListServersRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListServersResponse:
        revision, servers = await self._store.servers()
        lifecycle = await self._store.lifecycle()
        key_ids = (
            [k.id for k in await self._governance.keys()] if any(s.config.per_user for s in servers) else []
        )
        kept = await self._store.secrets()
        configs = []
        for server in servers:
            name = server.config.name
            headers = {}
            for key_id in key_ids if server.config.per_user else ():
                if stored := kept.get(credentials_name(name, key_id)):
                    headers[key_id] = orjson.loads(stored)
            grant = Grant.from_json(kept.get(refresh_token_name(name), ""))
            discovered = kept.get(client_name(name))
            configs.append(server_config(server, lifecycle, grant, headers, discovered))
        return registry_pb2.ListServersResponse(revision=revision, servers=configs)

    async def ReportCatalog(
        self, request: registry_pb2.ReportCatalogRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReportCatalogResponse:
        if request.state not in STATES:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"state must be one of {sorted(STATES)}")
        items: list[StoredItem] = []
        for kind, key, raws in (
            ("tool", "name", request.tools_json),
            ("prompt", "name", request.prompts_json),
            ("resource", "uri", request.resources_json),
            ("template", "uriTemplate", request.resource_templates_json),
        ):
            for raw in raws:
                value = _key(raw, key)
                if value is None:
                    await abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"each {kind} must be a JSON object with a non-empty {key!r}",
                    )
                items.append(StoredItem(request.server, kind, value, raw.decode()))
        capabilities = request.capabilities_json or b"{}"
        if _object(capabilities) is None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "capabilities_json must be a JSON object")
        now = self._clock()
        report = ReplicaReport(
            request.server,
            request.connector_id,
            request.state,
            request.error,
            items,
            capabilities.decode(),
            request.instructions,
            request.attempts,
            request.next_attempt_unix,
        )
        try:
            # One transaction: another replica heard from in time that still serves it keeps
            # it there for clients, whatever this one lost.
            revision, changed = await self._store.report_replica(report, now, now - self._lost_seconds)
        except UnknownServerError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no server named {request.server!r}")
        if changed:
            log.info(
                "server %s is %s with %d tools, %d prompts, %d resources (revision %d)",
                request.server,
                request.state,
                len(request.tools_json),
                len(request.prompts_json),
                len(request.resources_json) + len(request.resource_templates_json),
                revision,
            )
            await self.announce(revision)
        return registry_pb2.ReportCatalogResponse(revision=revision)

    async def ReportAlive(
        self, request: registry_pb2.ReportAliveRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReportAliveReply:
        if not request.connector_id:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "connector_id must be given")
        now = self._clock()
        before = await self._store.mark_alive(request.connector_id, now)
        lost = before is None or before < now - self._lost_seconds
        return registry_pb2.ReportAliveReply(report_again=lost)

    async def sweep(self) -> list[str]:
        """Settle every server on what the replicas heard from in time say (disconnected when
        none holds it, connected again when one does), announcing changes; forget replicas
        long silent. The servers whose state it changed."""
        now = self._clock()
        if now - self._started < self._lost_seconds:
            return []
        error = f"no connector replica holding it was heard from in {self._lost_seconds:g}s"
        settled = []
        # Only the servers found unsettled are locked and settled (each checked again then):
        # an idle sweep costs one read, whatever the number of servers.
        for name in await self._store.unsettled(now - self._lost_seconds):
            try:
                revision, changed = await self._store.settle(name, now - self._lost_seconds, error)
            except UnknownServerError:
                continue  # removed meanwhile
            if changed:
                log.warning("server %s settled on its replicas' word (revision %d)", name, revision)
                await self.announce(revision)
                settled.append(name)
        await self._store.forget_connectors(now - FORGET_AFTER_LOST * self._lost_seconds)
        return settled

    # Administration. Every change is announced, so edges and connectors follow within a moment.

    async def _admin(self, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        """`work`'s result, its refusal as the status the API maps (422, 409, 404), and the
        change announced."""
        try:
            result = await work
        except (InvalidFieldError, ConfigurationError) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ConflictError as exc:
            await abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except ServerExistsError as exc:
            await abort(context, grpc.StatusCode.ALREADY_EXISTS, f"a server named {exc.args[0]!r} exists")
        except MissingError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except UnknownServerError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no server named {exc.args[0]!r}")
        await self.announce(await self._store.revision())
        return result

    async def ListServerStates(
        self, request: registry_pb2.AdminRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ServerStates:
        _, servers = await self._store.servers()
        counts = Counter(i.server for i in (await self._store.catalog()).items if i.kind == "tool")
        connections = await self._store.connections(self._clock() - self._lost_seconds)
        states = []
        for server in servers:
            state = _server_state(server, counts[server.config.name])
            if server.state != "connected":
                # For operators only: a retrying server's attempts change nothing a client sees.
                reported = connections.get(server.config.name, {}).values()
                retrying = [row for row in reported if row.state != "connected"]
                if retrying:
                    state.attempts = max(row.attempts for row in retrying)
                    state.next_attempt_unix = min(row.next_attempt_unix for row in retrying)
            states.append(state)
        return registry_pb2.ServerStates(servers=states)

    async def PutServer(
        self, request: registry_pb2.PutServerRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ServerState:
        async def put() -> registry_pb2.ServerState:
            sent = client_config(request.config_json, await self._store.separator())
            _, servers = await self._store.servers()
            stored = next((s.config for s in servers if s.config.name == sent.name), None)
            config = redaction.kept(sent, None if request.create else stored)
            if any(g.name == config.name for g in await self._governance.groups()):
                raise ConflictError(f"{config.name!r} names a tool group; /mcp/{{name}} serves both")
            return _server_state(await self._store.put_server(config, request.create), 0)

        return await self._admin(context, put())

    async def RemoveServer(
        self, request: registry_pb2.NameRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        return registry_pb2.AdminReply(
            revision=await self._admin(context, self._store.remove_server(request.name))
        )

    async def ListCatalogTools(
        self, request: registry_pb2.CatalogToolsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ToolList:
        state = await self._store.catalog()
        disabled = await self._governance.disabled_tools()
        tools = registry_pb2.ToolList()
        for item in state.items:
            if item.kind != "tool" or request.server not in ("", item.server):
                continue
            description = orjson.loads(item.definition_json).get("description")
            tools.tools.append(
                registry_pb2.ToolInfo(
                    server=item.server,
                    name=item.key,
                    exposed_name=exposed_tool_name(item.server, item.key, state.separator),
                    description=description if isinstance(description, str) else "",
                    enabled=(item.server, item.key) not in disabled,
                )
            )
        return tools

    async def SetToolEnabled(
        self, request: registry_pb2.ToolToggle, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        revision = await self._admin(
            context, self._governance.set_tool_enabled(request.server, request.tool, request.enabled)
        )
        return registry_pb2.AdminReply(revision=revision)

    async def CreateKey(
        self, request: registry_pb2.VirtualKey, context: grpc.aio.ServicerContext
    ) -> registry_pb2.IssuedKey:
        return await self._admin(context, self._governance.create_key(request))

    async def ListKeys(
        self, request: registry_pb2.AdminRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.KeyList:
        return registry_pb2.KeyList(keys=await self._governance.keys())

    async def UpdateKey(
        self, request: registry_pb2.VirtualKey, context: grpc.aio.ServicerContext
    ) -> registry_pb2.VirtualKey:
        return await self._admin(context, self._governance.update_key(request))

    async def RotateKey(
        self, request: registry_pb2.NameRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.IssuedKey:
        return await self._admin(context, self._governance.rotate_key(request.name))

    async def DeleteKey(
        self, request: registry_pb2.NameRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        # Its tokens go with it (ON DELETE CASCADE); connectors close its sessions.
        connected = await self._user_tokens.connected(request.name)
        revision = await self._admin(context, self._governance.delete_key(request.name))
        for server, key_id, _ in connected:
            await self._disconnected(server, key_id)
        return registry_pb2.AdminReply(revision=revision)

    async def SetKeyCredentials(
        self, request: registry_pb2.KeyCredentials, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        async def put() -> int:
            if not any(k.id == request.key_id for k in await self._governance.keys()):
                raise MissingError(f"no key with id {request.key_id!r}")
            _, servers = await self._store.servers()
            server = next((s.config for s in servers if s.config.name == request.server), None)
            if server is None:
                raise MissingError(f"no server named {request.server!r}")
            if not server.per_user:
                raise InvalidFieldError(
                    "server", f"{request.server!r} is not per_user: its credentials are its own"
                )
            value = orjson.dumps(dict(request.headers)).decode() if request.headers else ""
            return await self._store.put_secret(credentials_name(request.server, request.key_id), value)

        return registry_pb2.AdminReply(revision=await self._admin(context, put()))

    async def PutGroup(
        self, request: registry_pb2.PutGroupRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ToolGroup:
        return await self._admin(context, self._governance.put_group(request.group, request.create))

    async def ListGroups(
        self, request: registry_pb2.AdminRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GroupList:
        return registry_pb2.GroupList(groups=await self._governance.groups())

    async def DeleteGroup(
        self, request: registry_pb2.NameRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        revision = await self._admin(context, self._governance.delete_group(request.name))
        return registry_pb2.AdminReply(revision=revision)

    async def GetBlocklist(
        self, request: registry_pb2.AdminRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.Blocklist:
        return registry_pb2.Blocklist(patterns=await self._governance.blocklist())

    async def SetBlocklist(
        self, request: registry_pb2.Blocklist, context: grpc.aio.ServicerContext
    ) -> registry_pb2.Blocklist:
        patterns = await self._admin(context, self._governance.set_blocklist(list(request.patterns)))
        return registry_pb2.Blocklist(patterns=patterns)

    async def GetSettings(
        self, request: registry_pb2.AdminRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GovernanceSettings:
        return await self._governance.settings()

    async def UpdateSettings(
        self, request: registry_pb2.GovernanceSettings, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GovernanceSettings:
        return await self._admin(context, self._governance.set_settings(request))

    async def StartAuthorization(
        self, request: registry_pb2.StartAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.StartAuthorizationReply:
        async def start() -> registry_pb2.StartAuthorizationReply:
            _, servers = await self._store.servers()
            server = next((s.config for s in servers if s.config.name == request.server), None)
            if server is None:
                raise MissingError(f"no server named {request.server!r}")
            if request.key_id and not any(k.id == request.key_id for k in await self._governance.keys()):
                raise MissingError(f"no key with id {request.key_id!r}")
            url = await self._authorizations.start(
                server, request.redirect_uri, request.key_id, tuple(request.redirect_uris)
            )
            return registry_pb2.StartAuthorizationReply(authorization_url=url)

        return await self._admin(context, start())

    async def CompleteAuthorization(
        self, request: registry_pb2.CompleteAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.CompletedAuthorization:
        done = await self._admin(
            context, self._authorizations.complete(request.state, request.code, request.identity)
        )
        if done.key_id:
            # A session on the identity's previous account (if any) ends: the next call is the new one's.
            await self._disconnected(done.server, done.key_id)
            if self._nc.is_connected:
                connected = {"server": done.server, "key_id": done.key_id}
                await self._nc.publish(bus.USER_CONNECTED, orjson.dumps(connected))
        return done

    async def IssueAccessToken(
        self, request: registry_pb2.AccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AccessToken:
        _, servers = await self._store.servers()
        server = next((s.config for s in servers if s.config.name == request.server), None)
        if server is None or server.oauth is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no OAuth server named {request.server!r}")
        oauth = with_discovered(server.oauth, (await self._store.secrets()).get(client_name(server.name)))
        try:
            grant = await self._access_tokens.issue(server.name, oauth, request.key_id, request.stale)
        except MissingError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except GrantEndedError as exc:
            if request.key_id:
                await self._disconnected(server.name, request.key_id)
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except TokenUnavailableError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return registry_pb2.AccessToken(
            access_token=grant.access_token, refresh_in_seconds=grant.refresh_in(time.time())
        )

    async def DeleteUserToken(
        self, request: registry_pb2.UserTokenRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdminReply:
        if not await self._user_tokens.delete(request.server, request.key_id):
            await abort(context, grpc.StatusCode.NOT_FOUND, _not_connected(request))
        await self._disconnected(request.server, request.key_id)
        return registry_pb2.AdminReply(revision=await self._store.revision())

    async def ListUserTokens(
        self, request: registry_pb2.UserTokenRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.UserTokenList:
        connected = await self._user_tokens.connected(request.key_id, request.server)
        return registry_pb2.UserTokenList(
            tokens=[
                registry_pb2.UserToken(server=server, key_id=key_id, updated_at=at)
                for server, key_id, at in connected
            ]
        )

    async def _disconnected(self, server: str, key_id: str) -> None:
        if self._nc.is_connected:
            await self._nc.publish(bus.USER_DISCONNECTED, orjson.dumps({"server": server, "key_id": key_id}))


def _not_connected(request: registry_pb2.UserTokenRequest) -> str:
    return f"key {request.key_id!r} has not connected {request.server!r}"


def _server_state(server: StoredServer, tools: int) -> registry_pb2.ServerState:
    return registry_pb2.ServerState(
        config_json=redaction.shown(server.config).model_dump_json(exclude_none=True).encode(),
        state=server.state,
        error=server.error,
        source=server.source,
        tools=tools,
    )


def _object(raw: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _key(raw: bytes, field: str) -> str | None:
    """The non-empty string `field` of a JSON object, or None when `raw` is not one."""
    value = _object(raw)
    key = None if value is None else value.get(field)
    return key if isinstance(key, str) and key else None
