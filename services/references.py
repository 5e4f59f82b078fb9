"""Config values written `env.NAME` (Bifrost's convention): read from the connector's
environment when they are used, and never stored or logged resolved."""

from __future__ import annotations

import os

ENV_PREFIX = "env."


class MissingSecretError(LookupError):
    """A config value references an environment variable the connector does not have."""


def resolve(value: str) -> str:
    """`env.NAME` becomes the value of NAME in the connector's environment."""
    if not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    resolved = os.environ.get(name)
    if resolved is None:
        raise MissingSecretError(f"environment variable {name} is not set")
    return resolved
