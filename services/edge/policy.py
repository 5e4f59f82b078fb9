"""Who may call what, as the edge enforces it from its snapshot: keys by the hash of their
secret, each key's tools (its own allowlist and its groups), and the global blocklist."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services import virtual_keys
from services.contracts import registry_pb2
from services.edge.errors import UnauthorizedError
from services.naming import exposed_tool_name

# The tool modes a key or group sets for itself (classic leaves it to the gateway's).
SEARCH_OR_CODE = frozenset({registry_pb2.TOOL_MODE_CODE, registry_pb2.TOOL_MODE_SEARCH})
# Request headers a virtual key may arrive in (Bifrost's three).
BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Selection:
    """The tools of each server a key or group reaches: "*" in a set is every tool; and of
    those, the ones that run without a person's approval (tools_to_auto_execute)."""

    tools: Mapping[str, frozenset[str]] = field(default_factory=dict)
    auto: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, selections: Iterable[registry_pb2.ToolSelection]) -> Selection:
        merged: dict[str, set[str]] = {}
        auto: dict[str, set[str]] = {}
        for s in selections:
            merged.setdefault(s.mcp_client_name, set()).update(s.tools_to_execute)
            # Without a list of its own, a selection runs all it selects at once.
            running = s.auto_execute.tools if s.HasField("auto_execute") else s.tools_to_execute
            auto.setdefault(s.mcp_client_name, set()).update(running)
        return cls(
            {server: frozenset(tools) for server, tools in merged.items()},
            {server: frozenset(tools) for server, tools in auto.items()},
        )

    def __or__(self, other: Selection) -> Selection:
        def union(
            a: Mapping[str, frozenset[str]], b: Mapping[str, frozenset[str]]
        ) -> dict[str, frozenset[str]]:
            return {s: a.get(s, frozenset()) | b.get(s, frozenset()) for s in a.keys() | b.keys()}

        return Selection(union(self.tools, other.tools), union(self.auto, other.auto))

    def permits(self, server: str, tool: str) -> bool:
        tools = self.tools.get(server)
        return tools is not None and ("*" in tools or tool in tools)

    def needs_approval(self, server: str, tool: str) -> bool:
        """Whether a call of a tool this selection permits waits for a person's approval."""
        auto = self.auto.get(server, frozenset())
        return "*" not in auto and tool not in auto

    @property
    def servers(self) -> frozenset[str]:
        return frozenset(self.tools)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    id: str
    name: str
    secret_hash: str
    active: bool
    expires_at: int
    # The key's own allowlist together with its groups'.
    reach: Selection
    groups: frozenset[str]
    # Who signs in as this key with the OpenID Connect provider (lower case; "*@domain").
    identities: frozenset[str] = frozenset()
    # Its rate limits and budget (None: none).
    limits: registry_pb2.Limits | None = None
    # How its views offer tools (classic, Code Mode, search).
    tool_mode: registry_pb2.ToolMode.ValueType = registry_pb2.TOOL_MODE_UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Governance:
    require_key: bool = False
    # By the hash of their secret, and by id.
    keys: Mapping[str, KeyPolicy] = field(default_factory=dict)
    by_id: Mapping[str, KeyPolicy] = field(default_factory=dict)
    # By each of their identities.
    by_identity: Mapping[str, KeyPolicy] = field(default_factory=dict)
    groups: Mapping[str, Selection] = field(default_factory=dict)
    # The rate limits of groups that have one.
    group_limits: Mapping[str, registry_pb2.RequestLimit] = field(default_factory=dict)
    # How each group's /mcp/{group} offers its tools, where a group says.
    group_modes: Mapping[str, registry_pb2.ToolMode.ValueType] = field(default_factory=dict)
    blocked_names: frozenset[str] = frozenset()
    blocked_servers: frozenset[str] = frozenset()
    separator: str = "_"
    # How MCP clients authenticate (mcp_server_auth_mode); never unspecified here.
    auth_mode: registry_pb2.AuthMode.ValueType = registry_pb2.AUTH_MODE_HEADERS

    @classmethod
    def from_snapshot(cls, snapshot: registry_pb2.Snapshot) -> Governance:
        governance = snapshot.governance
        separator = snapshot.settings.tool_separator or "_"
        groups = {g.name: Selection.of(g.tools) for g in governance.groups}
        keys = {}
        for key in governance.keys:
            reach = Selection.of(key.mcp_configs)
            for group in key.groups:
                reach = reach | groups.get(group, Selection())
            keys[key.secret_hash] = KeyPolicy(
                key.id,
                key.name,
                key.secret_hash,
                key.active,
                key.expires_at,
                reach,
                frozenset(key.groups),
                frozenset(virtual_keys.identity(i) for i in key.identities),
                key.limits if key.HasField("limits") else None,
                key.tool_mode,
            )
        wildcard = f"{separator}*"
        return cls(
            require_key=governance.settings.require_key,
            keys=keys,
            by_id={k.id: k for k in keys.values()},
            by_identity={i: k for k in keys.values() for i in k.identities},
            groups=groups,
            group_limits={g.name: g.rate_limit for g in governance.groups if g.HasField("rate_limit")},
            group_modes={g.name: g.tool_mode for g in governance.groups if g.tool_mode in SEARCH_OR_CODE},
            blocked_names=frozenset(p for p in governance.blocklist if not p.endswith("*")),
            blocked_servers=frozenset(
                p[: -len(wildcard)] for p in governance.blocklist if p.endswith(wildcard)
            ),
            separator=separator,
            auth_mode=governance.settings.auth_mode or registry_pb2.AUTH_MODE_HEADERS,
        )

    def blocked(self, server: str, tool: str) -> bool:
        return (
            server in self.blocked_servers
            or exposed_tool_name(server, tool, self.separator) in self.blocked_names
        )

    def authenticate(self, secret: str | None) -> KeyPolicy | None:
        """The policy of the key presented; None for no key where none is required.
        UnauthorizedError saying what to fix otherwise."""
        if secret is None:
            if self.require_key:
                raise UnauthorizedError(
                    "Unauthorized: this gateway requires a virtual key: send Authorization: Bearer <key>"
                )
            return None
        hashed = virtual_keys.digest(secret)
        policy = self.keys.get(hashed)
        if policy is None or not hmac.compare_digest(policy.secret_hash, hashed):
            raise UnauthorizedError(
                "Unauthorized: the virtual key is not recognised; check it or ask for a new one"
            )
        return _usable(policy)

    def assigned(self, claim: str) -> KeyPolicy | None:
        """The key whose identities name a person's claim exactly, else their domain."""
        return self.by_identity.get(virtual_keys.identity(claim)) or self.by_identity.get(
            virtual_keys.identity_domain(claim)
        )

    def identified(self, claim: str) -> KeyPolicy:
        """The key a person signed in with the OpenID Connect provider acts as; UnauthorizedError
        when no key names them, or it is not usable."""
        policy = self.assigned(claim)
        if policy is None:
            raise UnauthorizedError(
                f"Unauthorized: no virtual key is assigned to {claim}; ask an administrator to add it"
            )
        return _usable(policy)


def _usable(policy: KeyPolicy) -> KeyPolicy:
    if not policy.active:
        raise UnauthorizedError("Unauthorized: the virtual key is deactivated; ask an administrator")
    if policy.expires_at and policy.expires_at <= time.time():
        raise UnauthorizedError("Unauthorized: the virtual key has expired; ask for a new one")
    return policy


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The virtual key a request carries: Authorization: Bearer, X-Api-Key or x-bf-virtual-key."""
    authorization = headers.get("authorization")
    if authorization is not None and authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER) :].strip() or None
    return headers.get("x-api-key") or headers.get("x-bf-virtual-key") or None
