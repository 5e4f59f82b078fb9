import pytest

from services.edge.errors import InvalidRequestError, ParseError
from services.edge.jsonrpc import classify, parse_body


def test_requests_notifications_and_responses_are_told_apart() -> None:
    messages, batch = parse_body(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}')
    assert not batch
    assert (messages[0].kind, messages[0].id, messages[0].method) == ("request", 7, "tools/list")
    assert classify({"jsonrpc": "2.0", "method": "notifications/initialized"}).kind == "notification"
    assert classify({"jsonrpc": "2.0", "id": "a", "result": {}}).kind == "response"


def test_batches_are_reported_as_such() -> None:
    messages, batch = parse_body(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]')
    assert batch and [m.kind for m in messages] == ["request", "notification"]


def test_malformed_json_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_body(b'{"jsonrpc": "2.0",')


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"hello"',
        b'{"id": 1, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": true, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": null, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}',
        b'{"jsonrpc": "2.0", "id": 1}',
    ],
)
def test_invalid_requests(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        parse_body(body)
