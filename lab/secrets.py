"""Secrets are redacted by value wherever the suite writes or prints: records, folder names, W&B's
config, summary, group and tags, Hydra's files, log and error lines.

Going by key name alone (`hub.token=...`) misses a secret pulled in by interpolation
(`logger.group='${oc.env:WANDB_API_KEY}'`) or under an unexpected name, so every string is also
searched for the VALUES of secret-looking environment variables (`*_TOKEN`, `*_KEY`, `*_SECRET`,
`*_PASSWORD`, `WANDB_API_KEY`, `HF_TOKEN`) and of config keys that name a credential (`remember`).
This module sits below everything (lab.errors included), so that any layer can redact.
"""

from __future__ import annotations

import logging
import os
import re

REDACTED = "<redacted>"
# Environment variables whose values are credentials.
SECRET_ENV = re.compile(r"(_TOKEN|_KEY|_SECRET|_PASSWORD)$|^(WANDB_API_KEY|HF_TOKEN|TOKEN|PASSWORD|SECRET)$",
                        re.IGNORECASE)
# Key names that hold credentials (api_key, hub_token, secret, auth, ...), but not model fields such as
# num_key_value_heads or bos_token_id.
SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd|credentials?|auth)$", re.IGNORECASE)
# Shorter values are not searched for: a 3-character "secret" would be cut out of every word and
# number that holds it, and no real credential is that short.
MIN_LENGTH = 8
_remembered: set[str] = set()


def remember(value) -> None:
    """Redact this value from now on in this process (the value of a config key that names a credential)."""
    if isinstance(value, str) and len(value) >= MIN_LENGTH:
        _remembered.add(value)


def remember_secret_keys(value) -> None:
    """Remember every value found under a secret-looking key, at any depth of a plain container."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if SECRET_KEY.search(str(key)) and isinstance(inner, str):
                remember(inner)
            else:
                remember_secret_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            remember_secret_keys(inner)


def secret_values() -> list[str]:
    """The values to redact, longest first (so one secret inside another is not half-redacted)."""
    found = {value for name, value in os.environ.items() if SECRET_ENV.search(name) and len(value) >= MIN_LENGTH}
    return sorted(found | _remembered, key=len, reverse=True)


def redact_text(text: str) -> str:
    for value in secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact(value):
    """Every string of a plain container (keys too) with secret values replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secret values from a record's message (its arguments merged in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
