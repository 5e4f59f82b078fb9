import json
from pathlib import Path

import pytest

from services.registry.config import load_config, parse_config, parse_duration
from services.settings import ConfigurationError

BIFROST_CONFIG = {
    "providers": {"openai": {"keys": [{"value": "env.OPENAI_API_KEY"}]}},
    "mcp": {
        "client_configs": [
            {
                "name": "filesystem",
                "connection_type": "stdio",
                "stdio_config": {"command": "npx", "args": ["-y", "fs-server"], "envs": ["HOME", "PATH"]},
                "tools_to_execute": ["read_file", "list_directory"],
                "tools_to_auto_execute": ["read_file"],
                "tool_pricing": {"read_file": 0.001},
                "is_ping_available": True,
            },
            {
                "name": "search",
                "connection_type": "http",
                "connection_string": "env.SEARCH_MCP_URL",
                "headers": {"Authorization": "env.SEARCH_TOKEN"},
                "tools_to_execute": ["*"],
                "tool_execution_timeout": "30s",
            },
            {
                "name": "legacy",
                "connection_type": "sse",
                "connection_string": "http://127.0.0.1:9/sse",
                "disabled": True,
            },
        ]
    },
    "governance": {"virtual_keys": []},
}


def test_a_bifrost_config_loads_as_is(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BIFROST_CONFIG))
    config = load_config(path)
    fs, search, legacy = config.mcp.client_configs
    assert fs.stdio_config is not None and fs.stdio_config.envs == ["HOME", "PATH"]
    assert fs.tools_to_execute == ["read_file", "list_directory"]
    assert search.connection_string == "env.SEARCH_MCP_URL"
    assert search.tool_execution_timeout == 30.0
    assert legacy.disabled


def test_yaml_configs_load_too(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "mcp:\n  client_configs:\n    - name: a\n      connection_type: http\n      connection_string: http://x/mcp\n"
    )
    assert load_config(path).mcp.client_configs[0].name == "a"


def test_absent_tools_to_execute_means_no_tools() -> None:
    config = parse_config(
        {
            "mcp": {
                "client_configs": [
                    {"name": "a", "connection_type": "http", "connection_string": "http://127.0.0.1:1/mcp"}
                ]
            }
        }
    )
    assert config.mcp.client_configs[0].tools_to_execute == []


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (
            {"name": "a", "connection_type": "stdio"},
            "mcp.client_configs[0]: Value error, a stdio server needs stdio_config",
        ),
        ({"name": "a", "connection_type": "http"}, "needs connection_string"),
        (
            {"name": "a", "connection_type": "grpc", "connection_string": "http://127.0.0.1:1/mcp"},
            "mcp.client_configs[0].connection_type",
        ),
        (
            {"name": "a_b", "connection_type": "http", "connection_string": "http://127.0.0.1:1/mcp"},
            "must not contain the tool separator",
        ),
        (
            {
                "name": "a",
                "connection_type": "http",
                "connection_string": "http://127.0.0.1:1/mcp",
                "tool_execution_timeout": "soon",
            },
            "tool_execution_timeout",
        ),
        (
            {
                "name": "a",
                "connection_type": "http",
                "connection_string": "http://127.0.0.1:1/mcp",
                "tool_pricing": {"search": -1},
            },
            "tool_pricing.search",
        ),
    ],
)
def test_bad_server_configs_name_the_field(client: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config({"mcp": {"client_configs": [client]}})
    assert expected in str(caught.value)


def test_duplicate_server_names_are_refused() -> None:
    client = {"name": "a", "connection_type": "http", "connection_string": "http://127.0.0.1:1/mcp"}
    with pytest.raises(ConfigurationError, match="used twice"):
        parse_config({"mcp": {"client_configs": [client, client]}})


def test_unreadable_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not valid json"):
        load_config(broken)


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120
    assert parse_duration(7) == 7
    with pytest.raises(ValueError, match="greater than zero"):
        parse_duration(0)


HTTP = {"connection_type": "http", "connection_string": "https://mcp.example.test/mcp"}
CODE_FLOW = {
    "authorize_url": "https://id.example.test/authorize",
    "token_url": "https://id.example.test/token",
}


@pytest.mark.parametrize(
    ("client", "per_user", "per_user_oauth", "grant"),
    [
        ({"auth_type": "none"}, False, False, None),
        ({"auth_type": "headers", "headers": {"Authorization": "env.TOKEN"}}, False, False, None),
        ({"auth_type": "per_user_headers"}, True, False, None),
        (
            {
                "auth_type": "oauth",
                "oauth": {**CODE_FLOW, "grant_type": "authorization_code", "client_id": "gw"},
            },
            False,
            False,
            "authorization_code",
        ),
        (
            {
                "auth_type": "client_credentials",
                "oauth": {"token_url": CODE_FLOW["token_url"], "client_id": "gw", "client_secret": "env.S"},
            },
            False,
            False,
            "client_credentials",
        ),
        # Each identity signs in with a browser: the grant needs no saying.
        (
            {"auth_type": "per_user_oauth", "oauth": {**CODE_FLOW, "client_id": "gw"}},
            False,
            True,
            "authorization_code",
        ),
    ],
)
def test_each_bifrost_auth_type_loads(
    client: dict[str, object], per_user: bool, per_user_oauth: bool, grant: str | None
) -> None:
    config = parse_config({"mcp": {"client_configs": [{"name": "a", **HTTP, **client}]}})
    server = config.mcp.client_configs[0]
    assert (server.per_user, server.per_user_oauth) == (per_user, per_user_oauth)
    assert (server.oauth.grant_type if server.oauth is not None else None) == grant


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ({"auth_type": "client_credentials"}, "goes with an oauth section"),
        (
            {
                "auth_type": "headers",
                "oauth": {**CODE_FLOW, "client_id": "gw", "grant_type": "authorization_code"},
            },
            "goes with an oauth section",
        ),
        (
            {
                "auth_type": "per_user_oauth",
                "oauth": {
                    **CODE_FLOW,
                    "client_id": "gw",
                    "grant_type": "client_credentials",
                    "client_secret": "x",
                },
            },
            "takes the authorization_code grant",
        ),
        (
            {
                "auth_type": "oauth",
                "per_user": True,
                "oauth": {**CODE_FLOW, "client_id": "gw", "grant_type": "authorization_code"},
            },
            "per_user is auth_type per_user_headers",
        ),
    ],
)
def test_auth_types_that_contradict_their_config_are_refused(
    client: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        parse_config({"mcp": {"client_configs": [{"name": "a", **HTTP, **client}]}})


def test_bifrost_oauth_config_loads_with_discovery_left_to_the_gateway() -> None:
    """Bifrost's oauth_config (its OAuth2Config) as it is, or no section at all: endpoints
    and the client id are then discovered and registered when someone first authorizes."""
    clients = [
        {"name": "notion", **HTTP, "auth_type": "per_user_oauth", "oauth_config": {
            "id": "cfg-1", "redirect_uri": "https://bifrost.example.test/api/oauth/callback",
            "scopes": ["read", "write"], "server_url": "https://mcp.example.test/mcp", "use_discovery": True,
        }},
        {"name": "linear", **HTTP, "auth_type": "oauth", "oauth_client_id": "REDACTED"},
        {"name": "jira", **HTTP, "auth_type": "oauth", "oauth_config": {
            "client_id": "gw", "client_secret": "env.JIRA_SECRET", **CODE_FLOW,
            "registration_url": "https://id.example.test/register", "resource": "https://mcp.example.test/mcp",
        }},
    ]  # fmt: skip
    notion, linear, jira = parse_config({"mcp": {"client_configs": clients}}).mcp.client_configs
    assert notion.oauth is not None and notion.per_user_oauth
    assert (notion.oauth.grant_type, notion.oauth.scope, notion.oauth.client_id) == (
        "authorization_code",
        "read write",
        "",
    )
    assert not notion.oauth.complete
    assert (
        linear.oauth is not None
        and linear.oauth.grant_type == "authorization_code"
        and not linear.oauth.complete
    )
    assert (
        jira.oauth is not None
        and jira.oauth.complete
        and jira.oauth.resource == "https://mcp.example.test/mcp"
    )
