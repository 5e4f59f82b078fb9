"""Secrets in server configs, redacted on the way out of the admin API and kept on the way in.

A server's headers, its OAuth client secret, the values of its stdio environment and the
password of its URL are write-only, like key secrets: the API shows them as `REDACTED`,
and a config read from the API and written back with `REDACTED` left in place keeps the
stored secret. An `env.NAME` reference names no secret and is shown as it is.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from services.references import ENV_PREFIX
from services.registry.config import ClientConfig
from services.settings import ConfigurationError

REDACTED = "<redacted>"


def _hidden(value: str) -> str:
    return value if not value or value.startswith(ENV_PREFIX) else REDACTED


def _hidden_url(url: str | None) -> str | None:
    """The URL without the password of its userinfo."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{REDACTED}@{host}"))


def shown(config: ClientConfig) -> ClientConfig:
    """`config` as the admin API shows it: every secret `REDACTED`."""
    shown = config.model_copy(deep=True)
    shown.headers = {name: _hidden(value) for name, value in config.headers.items()}
    shown.connection_string = _hidden_url(config.connection_string)
    if shown.oauth is not None:
        shown.oauth.client_secret = _hidden(shown.oauth.client_secret)
    if shown.stdio_config is not None and isinstance(shown.stdio_config.envs, dict):
        shown.stdio_config.envs = {name: _hidden(v) for name, v in shown.stdio_config.envs.items()}
    return shown


def kept(new: ClientConfig, stored: ClientConfig | None) -> ClientConfig:
    """`new` with each secret it shows as the API showed it replaced by the stored one;
    ConfigurationError naming the field when there is none to keep."""
    merged = new.model_copy(deep=True)
    merged.headers = _kept_values(new.headers, stored.headers if stored else {}, "headers")
    if new.connection_string and REDACTED in new.connection_string:
        if stored is None or new.connection_string != _hidden_url(stored.connection_string):
            raise ConfigurationError(f"connection_string: {_UNKNOWN}")
        merged.connection_string = stored.connection_string
    if merged.oauth is not None and merged.oauth.client_secret == REDACTED:
        if stored is None or stored.oauth is None or not stored.oauth.client_secret:
            raise ConfigurationError(f"oauth.client_secret: {_UNKNOWN}")
        merged.oauth.client_secret = stored.oauth.client_secret
    if merged.stdio_config is not None and isinstance(merged.stdio_config.envs, dict):
        old = stored.stdio_config.envs if stored and stored.stdio_config else {}
        merged.stdio_config.envs = _kept_values(
            merged.stdio_config.envs, old if isinstance(old, dict) else {}, "stdio_config.envs"
        )
    return merged


_UNKNOWN = f"{REDACTED} stands for a stored secret, and there is none here: send the value"


def _kept_values(new: dict[str, str], stored: dict[str, str], field: str) -> dict[str, str]:
    kept = {}
    for name, value in new.items():
        if value == REDACTED:
            if name not in stored:
                raise ConfigurationError(f"{field}.{name}: {_UNKNOWN}")
            value = stored[name]
        kept[name] = value
    return kept
