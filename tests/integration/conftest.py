"""The gateway every integration module talks to: the real process tree, started once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, service_tree, stdio_server

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
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
