"""Peer gateways for `make bench-peers`, each installed into its own virtual environment."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from bench.targets import Target

PEERS: dict[str, Callable[[Path, str], contextlib.AbstractContextManager[Target]]] = {}
