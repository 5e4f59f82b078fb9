"""A stdio MCP server of one business domain's API, shaped like the SaaS servers agents meet:
ten entities, each with list, search, get, create, update and delete tools (60 tools), typed
arguments with descriptions, enums and references, answered from deterministic records.

    python bench/catalog_server.py --domain billing

The catalog measurement (`bench/catalog.py`) puts five of these in front of one gateway.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

RECORDS = 60
PAGE = 10


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "string", "number", "integer", "boolean", "date-time", "enum:a|b", "ref:entity"
    description: str

    def schema(self) -> dict[str, Any]:
        if self.kind.startswith("enum:"):
            return {"type": "string", "enum": self.kind[5:].split("|"), "description": self.description}
        if self.kind.startswith("ref:"):
            return {"type": "string", "description": f"{self.description} (a {self.kind[4:]} id)"}
        if self.kind == "date-time":
            return {"type": "string", "format": "date-time", "description": self.description}
        return {"type": self.kind, "description": self.description}

    def value(self, entity: str, index: int) -> Any:
        seed = zlib.crc32(f"{entity}.{self.name}:{index}".encode())
        if self.kind.startswith("enum:"):
            options = self.kind[5:].split("|")
            return options[seed % len(options)]
        if self.kind.startswith("ref:"):
            return f"{self.kind[4 : 4 + 3]}_{index * 7 % (RECORDS // 3):03d}"
        if self.kind == "number":
            return round((seed % 50000) / 100, 2)
        if self.kind == "integer":
            return seed % 100
        if self.kind == "boolean":
            return seed % 2 == 0
        if self.kind == "date-time":
            return f"2026-{1 + seed % 12:02d}-{1 + seed % 28:02d}T{seed % 24:02d}:00:00Z"
        return f"{self.name.replace('_', ' ')} {index}"


@dataclass(frozen=True)
class Entity:
    name: str
    plural: str
    description: str
    fields: tuple[Field, ...]

    @property
    def prefix(self) -> str:
        return self.name[:3]

    def record(self, index: int) -> dict[str, Any]:
        values = {field.name: field.value(self.name, index) for field in self.fields}
        return {"id": f"{self.prefix}_{index:03d}", **values}


def f(name: str, kind: str, description: str) -> Field:
    return Field(name, kind, description)


def e(name: str, plural: str, description: str, *fields: Field) -> Entity:
    return Entity(name, plural, description, fields)


DOMAINS: dict[str, tuple[Entity, ...]] = {
    "crm": (
        e(
            "customer",
            "customers",
            "A company that buys from us",
            f("name", "string", "Legal name"),
            f("email", "string", "Billing contact's address"),
            f("region", "enum:eu|us|apac", "Sales region"),
            f("tier", "enum:free|pro|enterprise", "Plan tier"),
            f("created_at", "date-time", "When the account was opened"),
        ),
        e(
            "contact",
            "contacts",
            "A person at a customer",
            f("customer_id", "ref:customer", "Their company"),
            f("full_name", "string", "Full name"),
            f("email", "string", "Work address"),
            f("role", "enum:buyer|admin|user", "Their role"),
        ),
        e(
            "lead",
            "leads",
            "A prospect not yet qualified",
            f("company", "string", "Company name"),
            f("source", "enum:web|event|referral|outbound", "Where it came from"),
            f("score", "integer", "Fit score, 0-100"),
            f("owner", "string", "Sales rep's handle"),
        ),
        e(
            "opportunity",
            "opportunities",
            "A deal in the pipeline",
            f("customer_id", "ref:customer", "The buyer"),
            f("amount", "number", "Expected value in USD"),
            f("stage", "enum:discovery|proposal|negotiation|won|lost", "Pipeline stage"),
            f("close_date", "date-time", "Expected close"),
        ),
        e(
            "account_note",
            "account_notes",
            "A free-text note on an account",
            f("customer_id", "ref:customer", "The account"),
            f("body", "string", "Note text"),
            f("author", "string", "Who wrote it"),
        ),
        e(
            "meeting",
            "meetings",
            "A scheduled call or visit",
            f("customer_id", "ref:customer", "With whom"),
            f("starts_at", "date-time", "Start time"),
            f("agenda", "string", "What will be discussed"),
        ),
        e(
            "campaign",
            "campaigns",
            "A marketing campaign",
            f("title", "string", "Campaign title"),
            f("channel", "enum:email|ads|social|event", "Channel"),
            f("budget", "number", "Budget in USD"),
        ),
        e(
            "segment",
            "segments",
            "A saved group of customers",
            f("label", "string", "Segment label"),
            f("rule", "string", "Filter expression that defines it"),
        ),
        e(
            "territory",
            "territories",
            "A sales territory",
            f("label", "string", "Territory label"),
            f("region", "enum:eu|us|apac", "Region it belongs to"),
            f("manager", "string", "Territory manager"),
        ),
        e(
            "forecast",
            "forecasts",
            "A quarterly revenue forecast",
            f("quarter", "string", "Quarter, e.g. 2026-Q4"),
            f("amount", "number", "Forecast in USD"),
            f("confidence", "enum:low|medium|high", "Confidence"),
        ),
    ),
    "billing": (
        e(
            "invoice",
            "invoices",
            "A bill sent to a customer",
            f("customer_id", "ref:customer", "Who is billed"),
            f("amount", "number", "Total in USD"),
            f("status", "enum:draft|open|paid|overdue|void", "Payment status"),
            f("due_date", "date-time", "When payment is due"),
        ),
        e(
            "payment",
            "payments",
            "Money received against an invoice",
            f("invoice_id", "ref:invoice", "Invoice paid"),
            f("amount", "number", "Amount in USD"),
            f("method", "enum:card|transfer|check", "How it was paid"),
        ),
        e(
            "subscription",
            "subscriptions",
            "A recurring plan",
            f("customer_id", "ref:customer", "Subscriber"),
            f("plan", "enum:monthly|annual", "Billing period"),
            f("seats", "integer", "Seats paid for"),
            f("active", "boolean", "Whether it renews"),
        ),
        e(
            "credit_note",
            "credit_notes",
            "A credit against an invoice",
            f("invoice_id", "ref:invoice", "Invoice credited"),
            f("amount", "number", "Credit in USD"),
            f("reason", "string", "Why it was issued"),
        ),
        e(
            "refund",
            "refunds",
            "Money returned to a customer",
            f("payment_id", "ref:payment", "Payment refunded"),
            f("amount", "number", "Amount in USD"),
        ),
        e(
            "price",
            "prices",
            "A price of a product",
            f("product", "string", "Product name"),
            f("unit_amount", "number", "Price per unit in USD"),
            f("currency", "enum:usd|eur|gbp", "Currency"),
        ),
        e(
            "coupon",
            "coupons",
            "A discount code",
            f("code", "string", "What customers type"),
            f("percent_off", "integer", "Discount, 0-100"),
        ),
        e(
            "tax_rate",
            "tax_rates",
            "A tax rate applied to invoices",
            f("jurisdiction", "string", "Where it applies"),
            f("percentage", "number", "Rate in percent"),
        ),
        e(
            "payout",
            "payouts",
            "A transfer to our bank account",
            f("amount", "number", "Amount in USD"),
            f("arrives_at", "date-time", "Expected arrival"),
        ),
        e(
            "dispute",
            "disputes",
            "A chargeback a customer opened",
            f("payment_id", "ref:payment", "Disputed payment"),
            f("status", "enum:open|won|lost", "Where it stands"),
            f("reason", "string", "Stated reason"),
        ),
    ),
    "support": (
        e(
            "ticket",
            "tickets",
            "A support request",
            f("customer_id", "ref:customer", "Who asked"),
            f("subject", "string", "One-line summary"),
            f("priority", "enum:low|normal|high|urgent", "Priority"),
            f("status", "enum:new|open|pending|solved", "Where it stands"),
        ),
        e(
            "comment",
            "comments",
            "A reply on a ticket",
            f("ticket_id", "ref:ticket", "The ticket"),
            f("body", "string", "Text"),
            f("public", "boolean", "Whether the customer sees it"),
        ),
        e(
            "agent",
            "agents",
            "A support agent",
            f("full_name", "string", "Full name"),
            f("team", "string", "Team"),
            f("available", "boolean", "Taking tickets now"),
        ),
        e(
            "macro",
            "macros",
            "A canned response",
            f("title", "string", "Title"),
            f("body", "string", "Text it inserts"),
        ),
        e(
            "sla_policy",
            "sla_policies",
            "A response-time target",
            f("priority", "enum:low|normal|high|urgent", "Priority it covers"),
            f("first_reply_minutes", "integer", "Minutes to the first reply"),
        ),
        e(
            "article",
            "articles",
            "A help-center article",
            f("title", "string", "Title"),
            f("body", "string", "Text"),
            f("published", "boolean", "Live"),
        ),
        e(
            "survey",
            "surveys",
            "A satisfaction survey answer",
            f("ticket_id", "ref:ticket", "Ticket rated"),
            f("score", "integer", "Score, 1-5"),
        ),
        e(
            "escalation",
            "escalations",
            "A ticket raised to engineering",
            f("ticket_id", "ref:ticket", "Ticket"),
            f("severity", "enum:sev1|sev2|sev3", "Severity"),
        ),
        e(
            "queue",
            "queues",
            "A routing queue",
            f("label", "string", "Queue label"),
            f("team", "string", "Team that works it"),
        ),
        e("tag", "tags", "A label on tickets", f("label", "string", "Tag text")),
    ),
    "storage": (
        e(
            "bucket",
            "buckets",
            "A storage bucket",
            f("label", "string", "Bucket name"),
            f("region", "enum:eu|us|apac", "Where it lives"),
            f("versioning", "boolean", "Keeps old versions"),
        ),
        e(
            "object",
            "objects",
            "A stored file",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("key", "string", "Path within the bucket"),
            f("size_bytes", "integer", "Size"),
            f("content_type", "string", "MIME type"),
        ),
        e(
            "upload",
            "uploads",
            "A multipart upload in progress",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("key", "string", "Target path"),
        ),
        e(
            "lifecycle_rule",
            "lifecycle_rules",
            "When objects expire or move",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("prefix", "string", "Keys it applies to"),
            f("expire_days", "integer", "Days until deletion"),
        ),
        e(
            "access_key",
            "access_keys",
            "Credentials for the storage API",
            f("owner", "string", "Who holds it"),
            f("read_only", "boolean", "Cannot write"),
        ),
        e(
            "share_link",
            "share_links",
            "A public link to an object",
            f("object_id", "ref:object", "Object shared"),
            f("expires_at", "date-time", "When it stops working"),
        ),
        e(
            "replication",
            "replications",
            "Copying a bucket to another region",
            f("bucket_id", "ref:bucket", "Source"),
            f("target_region", "enum:eu|us|apac", "Destination"),
        ),
        e(
            "snapshot",
            "snapshots",
            "A point-in-time copy of a bucket",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("taken_at", "date-time", "When"),
        ),
        e(
            "quota",
            "quotas",
            "A storage limit",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("max_bytes", "integer", "Limit in bytes"),
        ),
        e(
            "event_hook",
            "event_hooks",
            "A webhook on object changes",
            f("bucket_id", "ref:bucket", "Bucket"),
            f("url", "string", "Where events are posted"),
        ),
    ),
    "identity": (
        e(
            "user",
            "users",
            "A person who signs in",
            f("email", "string", "Sign-in address"),
            f("full_name", "string", "Full name"),
            f("status", "enum:active|suspended|invited", "Account state"),
        ),
        e(
            "group",
            "groups",
            "A set of users",
            f("label", "string", "Group name"),
            f("description", "string", "What it is for"),
        ),
        e(
            "membership",
            "memberships",
            "A user in a group",
            f("user_id", "ref:user", "User"),
            f("group_id", "ref:group", "Group"),
        ),
        e(
            "role",
            "roles",
            "A named set of permissions",
            f("label", "string", "Role name"),
            f("permissions", "string", "Comma-separated permissions"),
        ),
        e(
            "role_binding",
            "role_bindings",
            "A role granted to a user or group",
            f("role_id", "ref:role", "Role"),
            f("subject", "string", "User or group id"),
        ),
        e(
            "session",
            "sessions",
            "A signed-in session",
            f("user_id", "ref:user", "User"),
            f("ip_address", "string", "Where from"),
            f("expires_at", "date-time", "When it ends"),
        ),
        e(
            "mfa_device",
            "mfa_devices",
            "A second factor",
            f("user_id", "ref:user", "Owner"),
            f("kind", "enum:totp|webauthn|sms", "Kind"),
        ),
        e(
            "api_token",
            "api_tokens",
            "A personal access token",
            f("user_id", "ref:user", "Owner"),
            f("scopes", "string", "Granted scopes"),
        ),
        e(
            "audit_entry",
            "audit_entries",
            "A security event",
            f("actor", "string", "Who did it"),
            f("action", "string", "What they did"),
            f("at", "date-time", "When"),
        ),
        e(
            "sso_connection",
            "sso_connections",
            "A SAML or OIDC provider",
            f("label", "string", "Name"),
            f("protocol", "enum:saml|oidc", "Protocol"),
        ),
    ),
}


def tools_of(entities: tuple[Entity, ...]) -> dict[str, tuple[str, Entity]]:
    """Each tool's name: (verb, entity)."""
    tools: dict[str, tuple[str, Entity]] = {}
    for entity in entities:
        tools[f"list_{entity.plural}"] = ("list", entity)
        tools[f"search_{entity.plural}"] = ("search", entity)
        tools[f"get_{entity.name}"] = ("get", entity)
        tools[f"create_{entity.name}"] = ("create", entity)
        tools[f"update_{entity.name}"] = ("update", entity)
        tools[f"delete_{entity.name}"] = ("delete", entity)
    return tools


def definition(name: str, verb: str, entity: Entity) -> dict[str, Any]:
    """A tool's MCP definition: what a model reads to call it."""
    fields: dict[str, Any] = {field.name: field.schema() for field in entity.fields}
    the_id = {"id": {"type": "string", "description": f"The {entity.name.replace('_', ' ')}'s id"}}
    paging = {
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": PAGE,
            "description": "Page size",
        },
        "cursor": {"type": "string", "description": "From the previous page's next_cursor"},
    }
    query = {"query": {"type": "string", "description": "Words to match in any text field"}}
    filters = {k: {**v, "description": f"Only those with this {k}"} for k, v in fields.items()}
    one, many = entity.name.replace("_", " "), entity.plural.replace("_", " ")
    noun = entity.description[0].lower() + entity.description[1:]
    shapes: dict[str, tuple[str, dict[str, Any], list[str]]] = {
        "list": (f"List {many} ({noun}), filtered by any field.", {**filters, **paging}, []),
        "search": (f"Full-text search over {many}.", {**query, **paging}, ["query"]),
        "get": (f"Get one {one} by id.", the_id, ["id"]),
        "create": (f"Create a {one}: {noun}.", fields, list(fields)),
        "update": (f"Change fields of a {one}; others are kept.", {**the_id, **fields}, ["id"]),
        "delete": (f"Delete a {one} for good.", the_id, ["id"]),
    }
    text, properties, required = shapes[verb]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"name": name, "description": text, "inputSchema": schema}


def answer(verb: str, entity: Entity, arguments: dict[str, Any]) -> dict[str, Any]:
    """What a call returns: records from the deterministic table, filtered as asked."""
    records = [entity.record(index) for index in range(RECORDS)]
    if verb in ("list", "search"):
        query = str(arguments.get("query", "")).lower()
        wanted = {k: v for k, v in arguments.items() if k in {f.name for f in entity.fields}}
        found = [
            r for r in records
            if all(r.get(k) == v for k, v in wanted.items())
            and (not query or any(query in str(v).lower() for v in r.values()))
        ]  # fmt: skip
        start = int(arguments.get("cursor") or 0)
        limit = int(arguments.get("limit") or PAGE)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {entity.plural: page, "next_cursor": str(start + limit) if more else None}
    if verb == "create":
        return {**arguments, "id": f"{entity.prefix}_{RECORDS:03d}"}
    by_id = {r["id"]: r for r in records}
    record = by_id.get(str(arguments.get("id")))
    if record is None:
        raise ValueError(f"no {entity.name} {arguments.get('id')!r}")
    if verb == "update":
        return {**record, **arguments}
    if verb == "delete":
        return {"id": record["id"], "deleted": True}
    return record


def build(domain: str) -> Server[Any]:
    tools = tools_of(DOMAINS[domain])
    listed = [definition(name, verb, entity) for name, (verb, entity) in tools.items()]

    async def list_tools(ctx: Any, params: Any) -> Any:
        return {"tools": listed}

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
        verb, entity = tools[params.name]
        try:
            result = answer(verb, entity, dict(params.arguments or {}))
        except ValueError as error:
            return {"content": [{"type": "text", "text": str(error)}], "isError": True}
        return {"content": [{"type": "text", "text": json.dumps(result)}], "structuredContent": result}

    return Server(domain, version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(domain: str) -> None:
    server = build(domain)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain", choices=sorted(DOMAINS), required=True)
    anyio.run(serve, parser.parse_args().domain)


if __name__ == "__main__":
    main()
