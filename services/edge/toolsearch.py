"""Tool search for catalogs too large to list: a view offers `searchTools(query, limit)`,
ranked by BM25 (bm25s, in process) over each tool's name, description and arguments, which
answers the matched tools' definitions, and `callTool(name, arguments)` to call one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import bm25s
import orjson

SEARCH = "searchTools"
CALL = "callTool"
NAMES = frozenset({SEARCH, CALL})
DEFAULT_LIMIT = 8
MAX_LIMIT = 50

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": SEARCH,
        "description": "Find the tools for a task among many: ranked by how well their names, "
        "descriptions and arguments match the query. Answers each match's name, description and "
        "inputSchema; call one with callTool.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What you want to do, in a few words."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            },
            "required": ["query"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": CALL,
        "description": "Call a tool searchTools found, by its name, with arguments its inputSchema admits.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The tool's name, as searchTools gave it."},
                "arguments": {"type": "object", "description": "The tool's arguments."},
            },
            "required": ["name"],
        },
    },
]
DEFINITIONS_JSON = [orjson.dumps(d) for d in DEFINITIONS]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[_\-./:]+")


def words(name: str) -> str:
    """An identifier as words: snake, kebab and camel case split apart."""
    return _SEPARATORS.sub(" ", _CAMEL.sub(" ", name)).lower()


def document(name: str, definition: dict[str, Any]) -> str:
    """What a tool is searched by: its name (twice: names say the most), its description,
    and each argument's name and description."""
    parts = [words(name), words(name)]
    description = definition.get("description")
    if isinstance(description, str):
        parts.append(description)
    schema = definition.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    for argument, sub in (properties or {}).items():
        parts.append(words(str(argument)))
        if isinstance(sub, dict) and isinstance(sub.get("description"), str):
            parts.append(sub["description"])
    return " ".join(parts)


class ToolIndex:
    """One view's tools, indexed for searchTools (built with the view, once per snapshot)."""

    def __init__(self, tools: list[tuple[str, dict[str, Any]]]) -> None:
        self._tools = tools
        self._retriever: bm25s.BM25 | None = None
        if tools:
            corpus = bm25s.tokenize([document(n, d) for n, d in tools], stopwords="en", show_progress=False)
            self._retriever = bm25s.BM25()
            self._retriever.index(corpus, show_progress=False)

    def __len__(self) -> int:
        return len(self._tools)

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """The definitions (name, description, inputSchema) of the best matches, best first;
        none for a query that matches nothing."""
        if self._retriever is None or not query.strip():
            return []
        tokens = bm25s.tokenize([words(query)], stopwords="en", show_progress=False, return_ids=False)
        if not tokens or not tokens[0]:
            return []
        k = min(limit, len(self._tools))
        found, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        shown = []
        for index, score in zip(found[0], scores[0], strict=True):
            if score <= 0:
                continue
            name, definition = self._tools[int(index)]
            shown.append(
                {
                    "name": name,
                    "description": definition.get("description", ""),
                    "inputSchema": definition.get("inputSchema", {"type": "object"}),
                }
            )
        return shown


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    result_json: bytes
    is_error: bool = False


def answer_search(index: ToolIndex, arguments: dict[str, Any]) -> SearchAnswer:
    """searchTools' CallToolResult: the matches as text and as structuredContent."""
    query, limit = arguments.get("query"), arguments.get("limit", DEFAULT_LIMIT)
    if not isinstance(query, str):
        return _error('Invalid params: "query" must be a string')
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        return _error(f'Invalid params: "limit" must be an integer from 1 to {MAX_LIMIT}')
    found = index.search(query, limit)
    text = orjson.dumps(found).decode() if found else f"No tool matches {query!r}; try other words."
    result = {"content": [{"type": "text", "text": text}], "structuredContent": {"tools": found}}
    return SearchAnswer(orjson.dumps(result))


def _error(message: str) -> SearchAnswer:
    return SearchAnswer(orjson.dumps({"content": [{"type": "text", "text": message}], "isError": True}), True)
