"""The one exception a user's mistake raises: which key, what it was, and what is allowed."""

from __future__ import annotations

from typing import Any

from lab.secrets import redact_text


class ConfigError(ValueError):
    """An invalid config value: says which key, what it was, and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        # A value pulled in from a secret (`${oc.env:WANDB_API_KEY}`) is never echoed.
        super().__init__(redact_text(f"invalid config: {key}={value!r}; allowed: {allowed}"))
