"""`mcpgw servers|tools|keys|groups|blocklist|settings|usage` and `mcpgw audit
list|tail|export|verify`: the management API from a shell.

Tables for people by default, `--json` for scripts. The edge is `--url` (`MCPGW_URL`,
default http://127.0.0.1:8080); the admin token is `--admin-token`, `MCPGW_ADMIN_TOKEN`, or
the one `mcpgw up` keeps in its state directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

COMMANDS = ("servers", "tools", "keys", "groups", "blocklist", "settings", "usage")
# `mcpgw audit` with one of these asks the API; without, it runs the audit service.
AUDIT_ACTIONS = ("list", "tail", "export", "verify")
TAIL_SECONDS = 1.0
EXIT_REFUSED = 1
# Columns each listing shows in table form.
COLUMNS = {
    "servers": ("name", "connection_type", "state", "tools", "source", "next_attempt", "error"),
    "tools": ("exposed_name", "server", "name", "enabled"),
    "keys": (
        "id",
        "name",
        "active",
        "secret_prefix",
        "expires_at",
        "mcp_configs",
        "groups",
        "identities",
        "tool_mode",
    ),
    "groups": ("name", "tools", "rate_limit", "tool_mode", "description"),
    "approvals": ("id", "tool", "key_id", "arguments", "edge_id"),
    "audit": ("time", "method", "name", "key_id", "outcome", "duration_ms", "cost", "error_message"),
    "usage": ("key", "server", "tool", "calls", "errors", "p50_ms", "p95_ms", "cost"),
}


class Refused(Exception):
    """The API (or the network) said no; the message says why."""


def _common() -> argparse.ArgumentParser:
    """The options every API command takes: where the edge is, and the admin token."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("MCPGW_URL", "http://127.0.0.1:8080"))
    common.add_argument(
        "--admin-token", default=None, help="default: MCPGW_ADMIN_TOKEN or <state-dir>/admin.token"
    )
    common.add_argument("--state-dir", type=Path, default=Path(".state"))
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return common


def _record_filters(parser: argparse.ArgumentParser, *, paged: bool) -> None:
    parser.add_argument("--since", help="RFC 3339 time or Unix seconds")
    parser.add_argument("--until", help="RFC 3339 time or Unix seconds")
    parser.add_argument("--key", help="a virtual key id")
    parser.add_argument("--server")
    parser.add_argument("--tool")
    if paged:
        parser.add_argument("--method")
        parser.add_argument("--outcome", choices=["ok", "tool_error", "error"])
        parser.add_argument("--min-latency-ms", type=float, default=None)


def add_commands(commands: Any) -> None:
    """The administration subcommands, on the `mcpgw` parser's subcommand set."""
    common = _common()

    def command(name: str, help_text: str) -> Any:
        parser = commands.add_parser(name, help=help_text)
        return parser.add_subparsers(dest="action", required=True)

    def action(group: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, parents=[common])
        return parser

    servers = command("servers", "downstream MCP servers")
    action(servers, "list", "servers with their state")
    add = action(servers, "add", "add a server from a JSON file in Bifrost's client_configs shape")
    add.add_argument("file", type=Path)
    update = action(servers, "update", "replace a server's config from a JSON file")
    update.add_argument("file", type=Path)
    for verb in ("remove", "reconnect"):
        action(servers, verb, f"{verb} a server").add_argument("name")
    action(
        servers, "authorize", "the URL to open to authorize an OAuth (authorization code) server"
    ).add_argument("name")
    action(
        servers, "connections", "the keys that connected their own accounts at a per_user_oauth server"
    ).add_argument("name")
    disconnect = action(servers, "disconnect", "forget one key's account at a per_user_oauth server")
    disconnect.add_argument("name")
    disconnect.add_argument("key_id")

    tools = command("tools", "the tools of every server, and switching them off or on")
    action(tools, "list", "tools and whether they are enabled").add_argument("--server", default="")
    for verb in ("enable", "disable"):
        parser = action(tools, verb, f"{verb} one tool of a server")
        parser.add_argument("server")
        parser.add_argument("tool")

    def policy(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tools",
            action="append",
            metavar="SERVER:TOOL,TOOL",
            help="SERVER:* for every tool, SERVER: for none; repeat for more servers",
        )
        parser.add_argument("--group", action="append", help="a tool group; repeat for more")
        parser.add_argument(
            "--identity",
            action="append",
            metavar="EMAIL|*@DOMAIN",
            help="who signs in as this key with the OpenID Connect provider; repeat for more",
        )
        parser.add_argument("--description", default=None)
        parser.add_argument(
            "--rate-limit", metavar="N/WINDOW", help="calls per window, e.g. 100/1m; 'none' lifts it"
        )
        parser.add_argument(
            "--budget", metavar="AMOUNT/WINDOW", help="money per window, e.g. 10/1M; 'none' lifts it"
        )
        parser.add_argument(
            "--tool-rate-limit",
            action="append",
            metavar="TOOL=N/WINDOW",
            help="calls per window of one tool (exposed name); repeat for more",
        )
        parser.add_argument(
            "--max-concurrency", type=int, default=None, help="calls in flight at once (0: no cap)"
        )
        parser.add_argument("--expires-at", type=int, default=None, help="Unix seconds")
        parser.add_argument("--active", action=argparse.BooleanOptionalAction, default=None)
        parser.add_argument(
            "--tool-mode",
            choices=("classic", "code", "search"),
            default=None,
            help="how the key's views offer tools: each one, Code Mode's four meta-tools, or search",
        )

    keys = command("keys", "virtual keys")
    action(keys, "list", "keys (never their secrets)")
    create = action(keys, "create", "a new key; its secret is printed once")
    create.add_argument("name")
    policy(create)
    change = action(keys, "update", "change a key's policy or details (its secret stays)")
    change.add_argument("id")
    change.add_argument("--name", default=None)
    policy(change)
    for verb, text in (
        ("show", "one key"),
        ("rotate", "a new secret, same policy"),
        ("revoke", "delete a key"),
    ):
        action(keys, verb, text).add_argument("id")

    groups = command("groups", "tool groups (virtual MCP servers)")
    action(groups, "list", "groups")
    for verb in ("create", "update"):
        parser = action(groups, verb, f"{verb} a group")
        parser.add_argument("name")
        parser.add_argument("--tools", action="append", metavar="SERVER:TOOL,TOOL", default=[])
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--rate-limit",
            metavar="N/WINDOW",
            help="calls of its tools by all its keys per window, e.g. 500/1m",
        )
        parser.add_argument(
            "--tool-mode",
            choices=("classic", "code", "search"),
            default="classic",
            help="how /mcp/GROUP offers its tools: each one, Code Mode's four meta-tools, or search",
        )
    action(groups, "delete", "delete a group").add_argument("name")

    approvals = command("approvals", "calls waiting for a person's approval")
    action(approvals, "list", "the waiting calls, oldest first")
    action(approvals, "approve", "let a waiting call run").add_argument("id")
    action(approvals, "deny", "refuse a waiting call").add_argument("id")

    blocklist = command("blocklist", "tools no key can reach")
    action(blocklist, "show", "the patterns")
    for verb in ("set", "add", "remove"):
        action(blocklist, verb, f"{verb} patterns (exposed names or SERVER_*)").add_argument(
            "patterns", nargs="*"
        )

    usage = commands.add_parser(
        "usage", help="tool calls, errors, latency and cost from the audit", parents=[common]
    )
    usage.set_defaults(action="show")
    _record_filters(usage, paged=False)
    usage.add_argument("--by", default="server,tool", help="key, server, tool: comma-separated")

    settings = command("settings", "gateway-wide governance settings")
    action(settings, "show", "the settings")
    change = action(settings, "set", "change them (what is not given stays)")
    change.add_argument("--require-key", action=argparse.BooleanOptionalAction)
    change.add_argument(
        "--auth-mode", choices=("headers", "both", "oauth"), help="how MCP clients authenticate"
    )


def add_audit_actions(audit: argparse.ArgumentParser) -> None:
    """`mcpgw audit list|tail|export|verify` beside the audit service's own flags."""
    common = _common()
    actions = audit.add_subparsers(dest="action")
    for name, text in (
        ("list", "records, a page at a time (--cursor for the next)"),
        ("tail", "records as they are stored, until interrupted"),
        ("export", "every matching record as NDJSON"),
    ):
        parser = actions.add_parser(name, help=text, parents=[common])
        _record_filters(parser, paged=True)
        if name == "list":
            parser.add_argument("--cursor", type=int, default=0)
            parser.add_argument("--limit", type=int, default=100)
    actions.add_parser(
        "verify", help="walk the hash chains: the first record changed, removed or moved", parents=[common]
    )


def selections(values: list[str] | None) -> list[dict[str, Any]] | None:
    if values is None:
        return None
    out = []
    for value in values:
        server, colon, tools = value.partition(":")
        if not colon or not server:
            raise Refused(f"--tools {value!r}: write SERVER:TOOL,TOOL (or SERVER:* or SERVER:)")
        out.append({"mcp_client_name": server, "tools_to_execute": [t for t in tools.split(",") if t]})
    return out


class Api:
    def __init__(self, url: str, token: str) -> None:
        self._client = httpx2.Client(
            base_url=url.rstrip("/") + "/api", headers={"authorization": f"Bearer {token}"}, timeout=15
        )

    def __call__(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body, params=params)
        except httpx2.HTTPError as exc:
            raise Refused(f"cannot reach the gateway at {self._client.base_url}: {exc}") from None
        _refuse_failure(response)
        return None if response.status_code == 204 else response.json()

    def lines(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        """The lines of a streamed answer (NDJSON), as they arrive."""
        try:
            with self._client.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _refuse_failure(response)
                yield from (line.encode() for line in response.iter_lines() if line)
        except httpx2.HTTPError as exc:
            raise Refused(f"cannot reach the gateway at {self._client.base_url}: {exc}") from None


def _refuse_failure(response: httpx2.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message = f"{error['field']}: {error['message']}" if "field" in error else error["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text or response.reason_phrase
    raise Refused(f"{response.status_code}: {message}")


def _token(args: argparse.Namespace) -> str:
    token = args.admin_token or os.environ.get("MCPGW_ADMIN_TOKEN")
    if token:
        return str(token)
    path = args.state_dir / "admin.token"
    if path.is_file():
        return str(path.read_text().strip())
    raise Refused(f"no admin token: pass --admin-token, set MCPGW_ADMIN_TOKEN, or run where {path} exists")


def run(command: str, args: argparse.Namespace) -> int:
    try:
        api = Api(args.url, _token(args))
        if command == "audit" and args.action in ("tail", "export"):
            return follow(api, args)
        shown = act(api, command, args)
    except Refused as exc:
        print(f"mcpgw {command} {args.action}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 0
    print(json.dumps(shown, indent=2) if args.json else render(command, shown))
    if command == "audit" and args.action == "verify" and not shown["intact"]:
        return EXIT_REFUSED
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    names = ("since", "until", "key", "server", "tool", "method", "outcome", "min_latency_ms")
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


def follow(api: Api, args: argparse.Namespace) -> int:
    """`export`: every matching record as NDJSON; `tail`: then each new one as it is stored."""
    cursor = 0
    for line in api.lines("/audit", {**_filters(args), "format": "ndjson"}):
        print(line.decode() if args.json or args.action == "export" else render("audit", [json.loads(line)]))
        cursor = json.loads(line)["seq"]
    if args.action == "export":
        return 0
    while True:
        page = api("GET", "/audit", params={**_filters(args), "cursor": cursor, "limit": 1000})
        for record in page["records"]:
            print(json.dumps(record) if args.json else render("audit", [record]).splitlines()[-1], flush=True)
            cursor = record["seq"]
        if page["next_cursor"] is None:
            time.sleep(TAIL_SECONDS)


def act(api: Api, command: str, args: argparse.Namespace) -> Any:
    """What one subcommand asks of the API, and what it shows."""
    match command, args.action:
        case "servers", "list":
            return [
                {**s["config"], **{k: v for k, v in s.items() if k != "config"}}
                for s in api("GET", "/servers")
            ]
        case "servers", "add" | "update":
            config = json.loads(args.file.read_text())
            if args.action == "add":
                return api("POST", "/servers", config)
            return api("PUT", f"/servers/{config.get('name', '')}", config)
        case "servers", "remove":
            return api("DELETE", f"/servers/{args.name}") or {"removed": args.name}
        case "servers", "reconnect":
            return api("POST", f"/mcp/client/{args.name}/reconnect")
        case "servers", "authorize":
            return api("POST", f"/mcp/client/{args.name}/oauth/authorize")
        case "servers", "connections":
            return api("GET", f"/mcp/client/{args.name}/oauth/connections")
        case "servers", "disconnect":
            path = f"/mcp/client/{args.name}/oauth/connections/{args.key_id}"
            return api("DELETE", path) or {"disconnected": args.key_id}
        case "tools", "list":
            return (
                api("GET", "/tools", None) if not args.server else api("GET", f"/tools?server={args.server}")
            )
        case "tools", "enable" | "disable":
            return api("PUT", f"/tools/{args.server}/{args.tool}", {"enabled": args.action == "enable"})
        case "keys", "list":
            return api("GET", "/keys")
        case "keys", "show":
            return api("GET", f"/keys/{args.id}")
        case "keys", "create":
            body = _key_body(args)
            return api("POST", "/keys", {"name": args.name, **body})
        case "keys", "update":
            body = _key_body(args)
            if args.name is not None:
                body["name"] = args.name
            return api("PATCH", f"/keys/{args.id}", body)
        case "keys", "rotate":
            return api("POST", f"/keys/{args.id}/rotate")
        case "keys", "revoke":
            return api("DELETE", f"/keys/{args.id}") or {"revoked": args.id}
        case "groups", "list":
            return api("GET", "/groups")
        case "groups", "create" | "update":
            body = {
                "name": args.name,
                "description": args.description,
                "tools": selections(args.tools),
                "tool_mode": args.tool_mode,
            }
            if args.rate_limit is not None:
                body["rate_limit"] = _rate_limit("--rate-limit", args.rate_limit)
            return (
                api("POST", "/groups", body)
                if args.action == "create"
                else api("PUT", f"/groups/{args.name}", body)
            )
        case "groups", "delete":
            return api("DELETE", f"/groups/{args.name}") or {"deleted": args.name}
        case "approvals", "list":
            return api("GET", "/approvals")
        case "approvals", "approve" | "deny":
            verb = "approve" if args.action == "approve" else "deny"
            return api("POST", f"/approvals/{args.id}/{verb}") or {verb + "d": args.id}
        case "blocklist", "show":
            return api("GET", "/blocklist")
        case "blocklist", "set" | "add" | "remove":
            current = set(api("GET", "/blocklist")["patterns"])
            wanted = {
                "set": set(args.patterns),
                "add": current | set(args.patterns),
                "remove": current - set(args.patterns),
            }[args.action]
            return api("PUT", "/blocklist", {"patterns": sorted(wanted)})
        case "settings", "show":
            return api("GET", "/settings")
        case "settings", "set":
            changes = {"require_key": args.require_key, "mcp_server_auth_mode": args.auth_mode}
            return api("PUT", "/settings", {k: v for k, v in changes.items() if v is not None})
        case "audit", "list":
            page = api("GET", "/audit", params={**_filters(args), "cursor": args.cursor, "limit": args.limit})
            if page["next_cursor"] is not None and not args.json:
                print(f"(more: --cursor {page['next_cursor']})", file=sys.stderr)
            return page["records"] if not args.json else page
        case "audit", "verify":
            return api("GET", "/audit/verify")
        case "usage", _:
            by = ",".join(part.strip() for part in args.by.split(",") if part.strip())
            return api("GET", "/usage", params={**_filters(args), "group_by": by})["rows"]
    raise Refused(f"unknown action {args.action!r}")


def _key_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if (configs := selections(args.tools)) is not None:
        body["mcp_configs"] = configs
    if args.rate_limit is not None:
        body["rate_limit"] = _rate_limit("--rate-limit", args.rate_limit)
    if args.budget is not None:
        body["budget"] = _budget(args.budget)
    if args.tool_rate_limit is not None:
        limits = {}
        for value in args.tool_rate_limit:
            tool, equals, limit = value.partition("=")
            if not equals or not tool:
                raise Refused(f"--tool-rate-limit {value!r}: write TOOL=N/WINDOW, e.g. search_query=100/1m")
            limits[tool] = _rate_limit("--tool-rate-limit", limit)
        body["tool_rate_limits"] = limits
    if args.max_concurrency is not None:
        body["max_concurrency"] = args.max_concurrency
    for field, value in (
        ("groups", args.group),
        ("identities", args.identity),
        ("description", args.description),
        ("expires_at", args.expires_at),
        ("active", args.active),
        ("tool_mode", args.tool_mode),
    ):
        if value is not None:
            body[field] = value
    return body


def _per_window(flag: str, value: str) -> tuple[str, str]:
    amount, slash, window = value.partition("/")
    if not slash or not amount or not window:
        raise Refused(f"{flag} {value!r}: write AMOUNT/WINDOW, e.g. 100/1m (or 'none')")
    return amount, window


def _rate_limit(flag: str, value: str) -> dict[str, Any] | None:
    if value == "none":
        return None
    count, window = _per_window(flag, value)
    if not count.isdigit():
        raise Refused(f"{flag} {value!r}: the number of calls must be a whole number")
    return {"request_max_limit": int(count), "request_reset_duration": window}


def _budget(value: str) -> dict[str, Any] | None:
    if value == "none":
        return None
    amount, window = _per_window("--budget", value)
    try:
        return {"max_limit": float(amount), "reset_duration": window}
    except ValueError:
        raise Refused(f"--budget {value!r}: the amount must be a number") from None


def _selection(value: dict[str, Any]) -> str:
    return f"{value['mcp_client_name']}:{','.join(value['tools_to_execute'])}"


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(
            f"{v['mcp_client_name']}:{','.join(v['tools_to_execute'])}" if isinstance(v, dict) else str(v)
            for v in value
        )
    return "" if value is None else str(value)


def render(command: str, shown: Any) -> str:
    """A table of a listing; a `field: value` block of one thing."""
    if isinstance(shown, list):
        columns = COLUMNS[command]
        rows = [[_cell(item.get(c)) for c in columns] for item in shown]
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(line.rstrip() for line in lines)
    if isinstance(shown, dict):
        lines = [f"{key}: {_cell(value)}" for key, value in shown.items()]
        if "secret" in shown:
            lines.append("(the secret is shown this once: store it now)")
        return "\n".join(lines)
    return str(shown)
