import pytest

from services.registry.config import ClientConfig
from services.registry.redaction import REDACTED, kept, shown
from services.settings import ConfigurationError

SECRET = "s3cr3t-token"


def _http(**extra: object) -> ClientConfig:
    return ClientConfig.model_validate(
        {"name": "a", "connection_type": "http", "connection_string": "https://api.test/mcp", **extra}
    )


def test_every_secret_is_redacted_on_the_way_out_and_references_are_shown() -> None:
    config = _http(
        connection_string=f"https://bot:{SECRET}@api.test/mcp",
        headers={"Authorization": f"Bearer {SECRET}", "X-Team": "env.TEAM"},
        auth_type="oauth",
        oauth={"token_url": "https://id.test/token", "client_id": "gw", "client_secret": SECRET},
    )
    out = shown(config)
    assert SECRET not in out.model_dump_json()
    assert out.headers == {"Authorization": REDACTED, "X-Team": "env.TEAM"}
    assert out.connection_string == f"https://bot:{REDACTED}@api.test/mcp"
    assert out.oauth is not None and out.oauth.client_secret == REDACTED
    # The stored config itself is untouched.
    assert config.headers["Authorization"] == f"Bearer {SECRET}"


def test_stdio_environment_values_are_redacted() -> None:
    config = ClientConfig.model_validate(
        {"name": "a", "connection_type": "stdio", "stdio_config": {"command": "x", "envs": {"TOKEN": SECRET}}}
    )
    out = shown(config)
    assert out.stdio_config is not None and out.stdio_config.envs == {"TOKEN": REDACTED}


def test_a_config_read_and_written_back_keeps_its_secrets() -> None:
    stored = _http(
        connection_string=f"https://bot:{SECRET}@api.test/mcp",
        headers={"Authorization": f"Bearer {SECRET}"},
        auth_type="oauth",
        oauth={"token_url": "https://id.test/token", "client_id": "gw", "client_secret": SECRET},
    )
    edited = shown(stored).model_copy(update={"tools_to_execute": ["search"]})
    merged = kept(edited, stored)
    assert merged.tools_to_execute == ["search"]
    assert merged.headers == stored.headers and merged.connection_string == stored.connection_string
    assert merged.oauth is not None and merged.oauth.client_secret == SECRET


def test_a_new_value_replaces_the_stored_secret() -> None:
    stored = _http(headers={"Authorization": "Bearer old"})
    assert kept(_http(headers={"Authorization": "Bearer new"}), stored).headers == {
        "Authorization": "Bearer new"
    }


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"headers": {"Authorization": REDACTED}}, "headers.Authorization"),
        ({"connection_string": f"https://bot:{REDACTED}@api.test/mcp"}, "connection_string"),
    ],
)
def test_redacted_with_nothing_stored_names_the_field(sent: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        kept(_http(**sent), None)
    with pytest.raises(ConfigurationError, match=field):
        kept(_http(**sent), _http())


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"connection_string": "file:///etc/passwd"}, "connection_string"),
        ({"connection_string": "gopher://x/"}, "connection_string"),
        ({"connection_string": "http:///nohost"}, "connection_string"),
        ({"connection_string": "http://a.test/\x00"}, "connection_string"),
        ({"headers": {"X-Bad\r\nInjected": "1"}}, "headers"),
        ({"headers": {"X-Ok": "line\r\nInjected: 1"}}, "headers"),
        ({"headers": {"X-Ok": "nul\x00"}}, "headers"),
    ],
)
def test_urls_and_headers_that_cannot_work_are_refused(extra: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _http(**extra)


def test_a_url_reference_is_left_for_the_connector() -> None:
    assert _http(connection_string="env.MCP_URL").connection_string == "env.MCP_URL"
