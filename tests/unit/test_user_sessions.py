"""An identity's session with a per_user_oauth server opens on an access token from
registry: calls that waited on an opening that failed fail with it (one token request, not
one per caller), and the next call tries again; what registry answers becomes what the
caller is told."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import anyio
import grpc
import pytest

from services.connector.downstream import Downstream
from services.connector.errors import DownstreamUnavailableError, NeedsConnectionError
from services.connector.pool import DownstreamPool
from services.contracts import registry_pb2, registry_pb2_grpc
from services.settings import ConnectorSettings

pytestmark = pytest.mark.anyio


class Registry:
    """IssueAccessToken held until `release`, then answering `code`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        self.asked = 0
        self.release = anyio.Event()

    async def IssueAccessToken(self, request: registry_pb2.AccessTokenRequest, timeout: float) -> Any:
        self.asked += 1
        await self.release.wait()
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=self.details)


def shared() -> Downstream:
    config = registry_pb2.ServerConfig(name="personal", per_user_oauth=True)
    config.oauth.grant_type = "authorization_code"
    return cast(Downstream, SimpleNamespace(name="personal", config=config))


async def test_callers_waiting_on_a_failed_opening_share_its_failure() -> None:
    registry = Registry(grpc.StatusCode.UNAVAILABLE, "the token endpoint is unreachable")
    pool = DownstreamPool(ConnectorSettings(), cast(registry_pb2_grpc.RegistryStub, registry), None)  # type: ignore[arg-type]
    failures: list[Exception] = []

    async def call() -> None:
        try:
            await pool._user_session(shared(), "vk-1")
        except DownstreamUnavailableError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        registry.release.set()
    assert registry.asked == 1 and len(failures) == 5
    assert "the token endpoint is unreachable" in str(failures[0])
    # A call that comes after tries again.
    with pytest.raises(DownstreamUnavailableError):
        await pool._user_session(shared(), "vk-1")
    assert registry.asked == 2


@pytest.mark.parametrize(
    ("code", "told"),
    [
        (grpc.StatusCode.NOT_FOUND, "connect it, then call again"),
        (grpc.StatusCode.FAILED_PRECONDITION, "your authorization there ended"),
    ],
)
async def test_registry_without_a_usable_grant_is_the_link_to_connect(
    code: grpc.StatusCode, told: str
) -> None:
    registry = Registry(code, "no authorization")
    registry.release.set()
    pool = DownstreamPool(ConnectorSettings(), cast(registry_pb2_grpc.RegistryStub, registry), None)  # type: ignore[arg-type]
    with pytest.raises(NeedsConnectionError, match=told):
        await pool._user_session(shared(), "vk-1")
