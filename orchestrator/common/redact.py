"""Secrets out of what we write down: config dumps, MLflow params and tags, printed URIs, errors.

A value is replaced by `***` when its key looks like a secret (token, password, secret, key,
credential), when it holds a URI's password (`scheme://user:password@host`), a secret-looking
query parameter (`?token=...`, `X-Amz-Signature=...`) or assignment (`password=...`), or when it
contains the value of a credential environment variable (e.g. MLFLOW_TRACKING_PASSWORD,
AWS_SECRET_ACCESS_KEY, RAY_AUTH_TOKEN, PGPASSWORD), as is or URL-encoded. A user name alone is
no secret and stays readable.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
SECRET_NAME = re.compile(r"token|passw|secret|credential|api_?key|access_?key|(^|[._-])key$", re.I)
# scheme://user:password@host. The password runs to the last `@` before the host's end (`/?#`,
# whitespace, a quote), so one holding `@`, `:` or `%40` is masked whole; failing that, to the
# first `@` past a `/` (AWS secret keys hold `/`: s3://KEY:SECRET@bucket), unless it is a port
# (`http://host:5000/a@b`). The user may be empty (`redis://:password@host`); a user alone
# (`http://alice@host`) and `scheme://host:port` do not match.
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/?#:\s\"'<>]*:)"
    r"(?P<secret>[^/?#\s\"<>]+(?=@)|(?!\d+(?:[/?#\s]|$))[^?#\s\"<>@]+(?=@))",
    re.I,
)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[^=&#\s]*(?:token|passw|secret|key|signature|credential)[^=&#\s]*"
    r"|sig|pwd)=)(?P<secret>[^&;#\s\"'<>]+)",
    re.I,
)
# `password=...` outside a URL: a libpq/ODBC connection string, `RAY_AUTH_TOKEN=...` in a command
_ASSIGNED_SECRET = re.compile(
    r"(?P<head>(?<![\w.?&;-])[\w.-]*(?:passw(?:or)?d|pwd|secret|token|credentials?"
    r"|(?:api|secret|access|private)[_-]?key)=)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)",
    re.I,
)
_ENV_NAME = re.compile(r"TOKEN|PASSW|SECRET|KEY|CREDENTIAL", re.I)  # not PWD: the working dir
_MIN_ENV_SECRET_CHARS = 6  # shorter values ("1", "true") would mask ordinary words


def _environment_secrets() -> list[str]:
    # (read name by name: another thread, MLflow's telemetry among them, may set or remove a
    # variable meanwhile, and `os.environ.items()` then raises KeyError)
    found = ((k, os.environ.get(k)) for k in list(os.environ) if _ENV_NAME.search(k))
    values = {v for k, v in found if v is not None and len(v) >= _MIN_ENV_SECRET_CHARS}
    forms = values | {quote(v, safe="") for v in values} | {quote_plus(v) for v in values}
    return sorted(forms, key=len, reverse=True)  # the longest first: no half-masked values


def redact_text(text: str) -> str:
    """`text` with URI passwords, secret query parameters and credential variables masked."""
    for secret in _environment_secrets():  # first: a value may hold what the patterns cut at
        text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)
    return _ASSIGNED_SECRET.sub(lambda m: m["head"] + MASK, text)


def redact_exception(error: BaseException, max_chars: int = 300) -> str:
    """`error` fit to print: `TypeName: first line of its message`, secrets masked, at most
    `max_chars` characters of message (MLflow's exceptions quote the whole tracking URI)."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the original error
        text = "<unprintable message>"
    text = redact_text(text)  # before cutting: a URI cut before its `@` would not match
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) > max_chars:
        line = line[: max_chars - 3] + "..."
    name = type(error).__name__
    return f"{name}: {line}" if line else name


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
