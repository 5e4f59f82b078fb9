"""`bus.retrying`: JetStream away or electing a leader is waited out; a bad request is not."""

from __future__ import annotations

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError

from services import bus

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "RETRY_FIRST_SECONDS", 0.001)
    monkeypatch.setattr(bus, "RETRY_MOST_SECONDS", 0.004)


async def test_timeouts_are_tried_again_until_the_attempt_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    failures = [NatsTimeoutError(), TimeoutError(), NatsTimeoutError(), NatsTimeoutError()]

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "opened"

    assert await bus.retrying("opening the bucket", attempt) == "opened"
    assert not failures
    said = [r.getMessage() for r in caplog.records if "opening the bucket failed" in r.getMessage()]
    assert len(said) == 4, said


async def test_a_bad_request_is_raised_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise BadRequestError(description="stream name already in use with a different configuration")

    with pytest.raises(BadRequestError):
        await bus.retrying("creating the stream", attempt)
    assert calls == 1


async def test_other_errors_are_not_swallowed() -> None:
    async def attempt() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await bus.retrying("opening the bucket", attempt)
