"""The audit store's hash chains: each record holds the hash of the record before it in its
chain and its own, so a record changed, removed or moved in the database shows where.

A chain is one writer's (one audit replica's) records in the order it stored them. A
record's hash is SHA-256 over the previous hash and the record's stored bytes; verifying
walks each chain from its start (the first record, or where retention last cut it) and
names the first record that does not follow. It is tamper evidence, not tamper proofing:
someone who rewrites every record from a point on, hashes included, is caught only against
a copy of a later hash kept elsewhere (the chain heads the audit service logs every hour,
or an export).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

GENESIS = "0" * 64


def link_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


class Problem(StrEnum):
    # The record's bytes, or a column that repeats them, are not what was hashed.
    CHANGED = "changed"
    # The record does not follow the one before it: records between were removed, or moved.
    BROKEN = "removed or reordered before it"


@dataclass(frozen=True, slots=True)
class Link:
    chain: str
    position: int
    event_id: str
    prev_hash: str
    hash: str
    body: bytes
    # Whether the row's queryable columns still say what its body says.
    columns_match: bool = True


@dataclass(frozen=True, slots=True)
class Finding:
    chain: str
    position: int
    event_id: str
    problem: Problem


@dataclass(frozen=True, slots=True)
class Start:
    """Where a chain begins: its first position and the hash before it (retention moves it)."""

    position: int = 1
    prev_hash: str = GENESIS


class Walker:
    """Checks links one at a time (ordered by chain, then position), so a store of any size
    is verified as it streams by."""

    def __init__(self, starts: Mapping[str, Start]) -> None:
        self._expected: dict[str, Start] = dict(starts)
        self.checked = 0

    def check(self, link: Link) -> Finding | None:
        """The link's problem, if it does not follow its chain."""
        start = self._expected.get(link.chain, Start())
        if link.position != start.position or link.prev_hash != start.prev_hash:
            return Finding(link.chain, link.position, link.event_id, Problem.BROKEN)
        if link_hash(link.prev_hash, link.body) != link.hash or not link.columns_match:
            return Finding(link.chain, link.position, link.event_id, Problem.CHANGED)
        self._expected[link.chain] = Start(link.position + 1, link.hash)
        self.checked += 1
        return None


def verify(links: Iterable[Link], starts: Mapping[str, Start]) -> tuple[int, Finding | None]:
    """How many records were checked, and the first that breaks its chain."""
    walker = Walker(starts)
    for link in links:
        finding = walker.check(link)
        if finding is not None:
            return walker.checked, finding
    return walker.checked, None
