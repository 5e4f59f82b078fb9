import pytest

from services.edge.errors import InvalidRequestError, NestedTooDeepError, ParseError
from services.edge.jsonrpc import MAX_DEPTH, classify, parse_body


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


CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":'


def _nested(depth: int) -> bytes:
    return CALL + b'{"a":' * depth + b"1" + b"}" * depth + b"}}"


@pytest.mark.parametrize("depth", [130, 200, 300, 1_000, 5_000])
def test_nesting_deeper_than_the_gateway_carries_is_invalid_params(depth: int) -> None:
    with pytest.raises(NestedTooDeepError) as refused:
        parse_body(_nested(depth))
    assert (refused.value.code, refused.value.status) == (-32602, 400)
    assert "nests deeper" in refused.value.message


def test_nesting_up_to_the_limit_is_carried() -> None:
    # The message's own two levels (the request, params) count too.
    (message,), _ = parse_body(_nested(MAX_DEPTH - 2))
    assert message.method == "tools/call"
    with pytest.raises(NestedTooDeepError):
        parse_body(_nested(MAX_DEPTH - 1))


def test_many_brackets_at_no_depth_are_fine() -> None:
    wide = b"[" + b",".join(b"[]" for _ in range(2_000)) + b"]"
    (message,), _ = parse_body(CALL + b'{"a":' + wide + b"}}}")
    assert message.params is not None and len(message.params["arguments"]["a"]) == 2_000
