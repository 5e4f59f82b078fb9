import orjson
import pytest

from services.edge import streams
from services.edge.streams import StreamHub


def test_open_streams_are_counted_and_memory_is_released_once_a_burst_is_mostly_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[int] = []
    hub = StreamHub()
    monkeypatch.setattr(streams, "_release_free_memory", lambda: released.append(hub.open_streams))
    opened = [hub.open(f"s{n % 50}", "") for n in range(100)]
    assert hub.open_streams == 100
    for stream in opened[:49]:
        hub.close(stream)
    hub.close(opened[0])  # closing twice counts once
    assert hub.open_streams == 51 and released == []
    hub.close(opened[49])
    assert hub.open_streams == 50 and released == [50]
    # Ending sessions closes their streams; counting starts again from the 50 left (too few).
    for n in range(25):
        hub.end(f"s{n}")
    assert hub.open_streams == 25 and released == [50]
    hub.close_all()
    assert hub.open_streams == 0


def test_a_few_streams_never_trigger_a_release(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[int] = []
    monkeypatch.setattr(streams, "_release_free_memory", lambda: released.append(1))
    hub = StreamHub()
    for stream in [hub.open(f"s{n}", "") for n in range(10)]:
        hub.close(stream)
    assert released == []


def test_an_elicitations_completion_reaches_only_the_keys_sessions_that_take_url_elicitations() -> None:
    hub = StreamHub()
    listening = [
        hub.open("s-1", "", key_id="vk-bob", url_elicitation=True),
        hub.open("s-2", "", key_id="vk-bob"),
        hub.open("s-3", "", key_id="vk-amy", url_elicitation=True),
    ]
    told = hub.elicitation_complete("vk-bob", "notion", lambda session, server: f"{session}/{server}")
    assert told == 1
    heard = [orjson.loads(message) if (message := s.outbox.take()) is not None else None for s in listening]
    assert heard == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/elicitation/complete",
            "params": {"elicitationId": "s-1/notion"},
        },
        None,
        None,
    ]
