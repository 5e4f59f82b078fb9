"""Log records as JSON lines, each naming the trace of the operation it was written for."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from services.settings import LogFormat
from services.telemetry import current_trace, setup_logging


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("INFO", "edge", LogFormat.JSON)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def test_each_record_is_one_json_object_with_its_trace(captured: io.StringIO) -> None:
    log = logging.getLogger("services.edge.test")
    token = current_trace.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        log.warning("call to %s failed", "srv_t")
    finally:
        current_trace.reset(token)
    log.info("between operations")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unexpected")
    first, second, third = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    assert first["message"] == "call to srv_t failed" and first["level"] == "WARNING"
    assert first["service"] == "edge" and first["logger"] == "services.edge.test"
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["time"].endswith("+00:00")
    assert "trace_id" not in second
    assert "ValueError: boom" in third["exception"]


def test_text_stays_the_default() -> None:
    from services.settings import CommonSettings

    assert CommonSettings().log_format is LogFormat.TEXT
