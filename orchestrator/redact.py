"""Secrets out of what we write down: config dumps, MLflow params and tags, printed URIs.

A value is replaced by `***` when its key looks like a secret (token, password, secret, key,
credential), when it holds a URI's password (`scheme://user:password@host`) or a secret-looking
query parameter (`?token=...`), or when it contains the value of a credential environment
variable (e.g. MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, RAY_AUTH_TOKEN).
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
SECRET_NAME = re.compile(r"token|passw|secret|credential|api_?key|access_?key|(^|[._-])key$", re.I)
_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]+:)(?P<secret>[^@/\s]+)(?=@)", re.I
)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[^=&\s]*(?:token|passw|secret|key|signature)[^=&\s]*)=)(?P<secret>[^&\s]+)",
    re.I,
)
_ENV_NAME = re.compile(r"TOKEN|PASSW|SECRET|KEY|CREDENTIAL", re.I)


def _environment_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _ENV_NAME.search(k) and len(v) >= 6}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str) -> str:
    """`text` with URI passwords, secret query parameters and credential variables masked."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)
    for secret in _environment_secrets():
        text = text.replace(secret, MASK)
    return text


def redact(tree: Any, key: str = "") -> Any:
    """A copy of nested dicts/lists/scalars with every secret masked (see the module doc)."""
    if isinstance(tree, dict):
        return {k: redact(v, str(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(redact(v, key) for v in tree)
    if isinstance(tree, str):
        if tree and SECRET_NAME.search(key.rsplit(".", 1)[-1]):
            return MASK
        return redact_text(tree)
    return tree
