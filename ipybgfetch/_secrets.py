"""What of a request may be written to disk, and what is a secret kept in memory only.

Header values are stored only for an allowlist of headers known to be harmless
(:data:`STORED_HEADERS`); any other header may carry a credential (``X-Api-Key``,
``PRIVATE-TOKEN``, ``Authorization``...), so it stays in memory and a registration
restored from disk waits in ``needs-credentials`` for it. Query parameters that carry
secrets (:func:`is_secret_param`: ``access_token``, ``sig``, the ``X-Amz-*`` signing
parameters...) are stored with their value replaced by :data:`REDACTED`; a URL holding
them (a signed redirect target) is not stored at all where it is only a by-product.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = [
    "REDACTED",
    "STORED_HEADERS",
    "RedactingFilter",
    "has_redacted_params",
    "has_secret_params",
    "is_secret_param",
    "redact_text",
    "redact_url",
    "secret_headers",
    "stored_headers",
]

#: request headers whose values are written to disk; every other one is a credential
STORED_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-language",
        "content-type",
        "dnt",
        "pragma",
        "user-agent",
        "x-requested-with",
    }
)
REDACTED = "REDACTED"

_SECRET_NAMES = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "auth_token",
        "authtoken",
        "authorization",
        "token",
        "key",
        "apikey",
        "api_key",
        "api-key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "session",
        "sessionid",
        "session_id",
        "jwt",
        "credential",
        "credentials",
        "policy",
        "key-pair-id",
        "awsaccesskeyid",
        "private_token",
        "private-token",
    }
)
_SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-ms-")
_SECRET_SUFFIXES = ("_token", "-token", "_key", "-key", "_secret", "-secret", "signature")
_QUERY_PARAM = re.compile(r"([?&;])([^=&#;\s'\"]+)=([^&#;\s'\"]*)")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter of this name may carry a secret."""
    lowered = name.lower()
    return (
        lowered in _SECRET_NAMES
        or lowered.startswith(_SECRET_PREFIXES)
        or lowered.endswith(_SECRET_SUFFIXES)
    )


def stored_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers whose values may be written to disk (the allowlist)."""
    return {k: v for k, v in headers if k.lower() in STORED_HEADERS}


def secret_headers(names: Iterable[str]) -> bool:
    """Whether any of these header names is kept in memory only."""
    return any(name.lower() not in STORED_HEADERS for name in names)


def _redact(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if value and is_secret_param(name):
        return f"{sep}{name}={REDACTED}"
    return match.group(0)


def redact_url(url: str) -> str:
    """``url`` with the value of every secret-bearing query parameter replaced."""
    if "?" not in url:
        return url
    return _QUERY_PARAM.sub(_redact, url)


redact_text = redact_url  # an error message quoting URLs: the same rule over the text


def has_secret_params(url: str) -> bool:
    """Whether ``url`` carries a secret-bearing query parameter with a value."""
    return "?" in url and redact_url(url) != url


def has_redacted_params(url: str) -> bool:
    """Whether ``url`` was stored with a secret replaced (it cannot be sent as it is)."""
    if "?" not in url:
        return False
    return any(
        is_secret_param(m.group(2)) and m.group(3) == REDACTED for m in _QUERY_PARAM.finditer(url)
    )


class RedactingFilter(logging.Filter):
    """Redacts secret query parameters from every record of the ``ipybgfetch`` logger.

    Log lines quote URLs (start, retry, resume, done, failed) and error texts that may
    quote them too; a user's logging configuration may write them to a file, so the
    secrets are taken out here, once, for every line. It runs only for records that
    pass the level check, so a disabled level costs nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
