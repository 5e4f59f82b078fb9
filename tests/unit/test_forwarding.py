import aiohttp
import pytest

from services.connector.errors import DownstreamUnavailableError
from services.connector.forwarding import HttpEndpoint, HttpForwarder

pytestmark = pytest.mark.anyio


async def test_a_call_after_the_connection_closed_is_unavailable_not_a_fault() -> None:
    # The server's session ends (its pool closes) just as a call is about to use it.
    http = aiohttp.ClientSession()
    await http.close()
    endpoint = HttpEndpoint("http://127.0.0.1:9/mcp", {}, http)
    async with HttpForwarder(
        "gone", endpoint, "2025-11-25", on_notification=lambda _: None, on_session_lost=lambda: None
    ) as forwarder:
        with pytest.raises(DownstreamUnavailableError, match="disconnected"):
            await forwarder.call_tool("t", b"{}", None, 5.0, None)
