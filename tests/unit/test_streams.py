import pytest

from services.edge import streams
from services.edge.streams import StreamHub


def test_open_streams_are_counted_and_memory_is_released_once_a_burst_is_mostly_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[int] = []
    hub = StreamHub()
    monkeypatch.setattr(streams, "_release_free_memory", lambda: released.append(hub.open_streams))
    opened = [hub.open(f"s{n % 50}", "")[0] for n in range(100)]
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
    for stream in [hub.open(f"s{n}", "")[0] for n in range(10)]:
        hub.close(stream)
    assert released == []
