"""registry: the source of truth for servers, the tool catalog and settings."""
