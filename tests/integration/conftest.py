"""The gateway every integration module talks to: the real process tree, started once."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.registry.store import RegistryStore
from tests.processes import ROOT, service_tree, stdio_server

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
PG_DSN_VARIABLE = "MCPGW_TEST_PG_DSN"
MAX_BODY = 64 * 1024
KEEPALIVE_SECONDS = 0.5


@pytest.fixture(scope="session")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def gateway(gateway_dir: Path) -> Iterator[str]:
    env = {"MCPGW_MAX_BODY_BYTES": str(MAX_BODY), "MCPGW_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS)}
    with service_tree(gateway_dir, [stdio_server("fixture", FIXTURE)], env=env) as (base,):
        yield f"{base}/mcp"


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A schema of its own on the PostgreSQL of MCPGW_TEST_PG_DSN, dropped after: its DSN and
    the engine options that put a store there (skips the test without one)."""
    dsn = os.environ.get(PG_DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{PG_DSN_VARIABLE} is not set (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    schema = f"mcpgw_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(dsn)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OSError as exc:
        await admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_DSN_VARIABLE} is not reachable: {exc}")
    try:
        yield dsn, {"connect_args": {"server_settings": {"search_path": schema}}}
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RegistryStore]:
    if request.param == "sqlite":
        opened = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
        yield opened
        await opened.close()
        return
    async with postgres_schema() as (dsn, options):
        opened = await RegistryStore.open(dsn, **options)
        try:
            yield opened
        finally:
            await opened.close()
