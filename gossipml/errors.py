"""The one error type every part's configuration raises (a leaf module: it imports nothing)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An experiment file or table is malformed; the message says what to change."""
