"""Masking secrets in log records, whatever the format: configured secret values, credentials in headers,
signed URL query strings and long base64 blobs (inline images) never reach a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

MASK = "***"
# Query parameters that make a URL a credential: Discord CDN (ex/is/hm), S3 / GCS / Azure / CloudFront
# signatures, and tokens or keys passed in the query.
SIGNED_PARAMS = frozenset({
    "ex", "is", "hm", "signature", "sig", "token", "key", "access_token", "auth", "policy", "key-pair-id",
    "expires", "se", "sp", "sv", "skoid", "sktid",
})  # fmt: skip
SIGNED_PREFIXES = ("x-amz-", "x-goog-")
BASE64_MIN = 200

_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>`\\]+""")
# `Authorization: <anything up to the end of the value>` in headers, dict reprs and JSON
_AUTH_HEADER = re.compile(
    r"""(?i)(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)([^"'\r\n,}]+)"""
)
# A credential scheme followed by its token, wherever it appears. Capitalised only, since "bearer" and "key"
# are prose words too; fal's "Key <id>:<secret>" only before something token-shaped.
_SCHEME_TOKEN = re.compile(r"""\b(Bearer|BEARER|Basic)\s+([A-Za-z0-9._~+/=:-]+)|\b(Key)\s+([A-Za-z0-9._~+/=:-]{12,})""")
# key=value / "key": "value" pairs whose name says the value is secret
_SECRET_PAIR = re.compile(
    r"""(?i)(\b(?:x-api-key|x-key|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|client[_-]?secret|"""
    r"""webhook[_-]?secret|password|passwd|access[_-]?token|refresh[_-]?token|token)["']?\s*[:=]\s*["']?)"""
    r"""([^\s"'&,;})\]]+)"""
)
_BASE64 = re.compile(rf"[A-Za-z0-9+/_-]{{{BASE64_MIN},}}={{0,2}}")


def _signed(query: str) -> bool:
    for name, _ in parse_qsl(query, keep_blank_values=True):
        lowered = name.lower()
        if lowered in SIGNED_PARAMS or lowered.startswith(SIGNED_PREFIXES):
            return True
    return False


def _mask_url(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password:
        url = url.replace(f":{parts.password}@", f":{MASK}@", 1)
    if parts.query and _signed(parts.query):
        # keep the host and path for debugging; the whole query goes, as its pieces are only valid together
        url = url.replace(f"?{parts.query}", "?<redacted>", 1)
    return url


def _mask_scheme(match: re.Match[str]) -> str:
    scheme = match.group(1) or match.group(3)
    return f"{scheme} {MASK}"


class Redactor:
    """Turns text into text safe to log. Known secret values are added once settings are read."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; real keys and tokens are far longer.
        self._secrets |= {s for s in secrets if s and len(s) >= 6}
        if self._secrets:
            alternatives = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial masks
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def add_settings(self, settings: Any) -> None:
        """Every SecretStr field of a settings object (API keys, tokens, webhook secrets)."""
        values = []
        for name in type(settings).model_fields:
            value = getattr(settings, name, None)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
        self.add(values)

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        text = _URL.sub(_mask_url, text)
        text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
        text = _SCHEME_TOKEN.sub(_mask_scheme, text)
        text = _SECRET_PAIR.sub(lambda m: m.group(1) + MASK, text)
        return _BASE64.sub(lambda m: f"<{len(m.group(0))} chars of base64>", text)


class RedactFilter(logging.Filter):
    """A handler filter: formats the record's message (and traceback) now, redacted, so every formatter and
    every later handler sees only the safe text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_reelbot_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we have rather than nothing
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self.redactor(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        record._reelbot_redacted = True
        return True
