"""searchTools' ranking and answers, over tool definitions alone."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.edge.toolsearch import ToolIndex, answer_search, document, words

TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("time_get_current_time", {
        "description": "Get the current time in a specific timezone",
        "inputSchema": {
            "type": "object", "properties": {"timezone": {"type": "string", "description": "IANA name"}},
        },
    }),
    ("time_convert_time", {"description": "Convert a time between timezones"}),
    ("github_search_issues", {"description": "Search issues and pull requests"}),
    ("github_deleteRepository", {"description": "Delete a repository for good"}),
    ("weather-forecast", {"description": "Forecast for a city", "inputSchema": {"properties": {"city": {}}}}),
]  # fmt: skip


def test_identifiers_read_as_words() -> None:
    assert words("github_deleteRepository") == "github delete repository"
    assert words("weather-forecast.v2") == "weather forecast v2"
    assert "timezone" in document(*TOOLS[0]) and "iana" in document(*TOOLS[0]).lower()


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("the current time in Tokyo", "time_get_current_time"),
        ("convert 9am Lisbon time to New York", "time_convert_time"),
        ("find open issues", "github_search_issues"),
        ("remove a repository", "github_deleteRepository"),
        ("forecast for a city", "weather-forecast"),
    ],
)
def test_the_best_match_comes_first(query: str, best: str) -> None:
    assert ToolIndex(TOOLS).search(query, 3)[0]["name"] == best


def test_a_query_that_matches_nothing_finds_nothing_and_limit_bounds_the_rest() -> None:
    index = ToolIndex(TOOLS)
    assert index.search("zzz qqq") == [] and index.search("the of a") == [] and index.search("   ") == []
    assert len(index.search("time timezone issues repository", 2)) == 2
    assert ToolIndex([]).search("time") == []


def test_the_answer_carries_each_match_with_its_schema_and_refuses_bad_arguments() -> None:
    found = orjson.loads(answer_search(ToolIndex(TOOLS), {"query": "current time", "limit": 1}).result_json)
    [match] = found["structuredContent"]["tools"]
    assert match["name"] == "time_get_current_time"
    assert match["inputSchema"]["properties"]["timezone"]["type"] == "string"
    assert answer_search(ToolIndex(TOOLS), {"query": 3}).is_error
    assert answer_search(ToolIndex(TOOLS), {"query": "x", "limit": 0}).is_error
    assert answer_search(ToolIndex(TOOLS), {"query": "x", "limit": True}).is_error
