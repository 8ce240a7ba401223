"""HTTP for provider adapters: reads retry, submits never repeat, failures come out normalised.

- GET (status, result) is idempotent: retried on 429, 5xx, resets, timeouts and unreadable JSON, with
  exponential backoff and jitter, honouring Retry-After. A poll failure is not a task failure.
- POST submit is sent at most once. If the request may have reached the provider (timeout or reset after
  sending, a gateway error, an unreadable 2xx) it is SUBMIT_AMBIGUOUS, never resent.
- Logs carry the method, host and path only: no query strings (signed URLs), headers (keys) or bodies
  (base64 images).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from bot.providers.base import ErrorCode, ProviderError

log = logging.getLogger(__name__)

# The transport failures after which a request may have been received and acted on.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
# Failures that prove nothing was sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Classifier = Callable[[httpx.Response, Any], ProviderError]
# Told of every exchange: (provider, method, HTTP status — or the transport failure's name when none came).
# Metrics hang here without this module importing them.
RequestObserver = Callable[[str, str, int | str], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Exponential with full jitter; a provider's Retry-After is a floor."""
        backoff = min(self.cap_s, self.base_s * 2 ** (attempt - 1)) * (0.5 + (rng or random).random() / 2)
        return max(backoff, retry_after or 0.0)


def safe_url(url: str) -> str:
    """host + path, for logs: never the query (signatures, tokens)."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def provider_message(body: Any, fallback: str = "") -> str:
    """The provider's own words from an error body, whatever its shape."""
    if isinstance(body, Mapping):
        for path in (("error", "message"), ("message",), ("msg",), ("detail",), ("error",), ("data", "error"),
                     ("task_status_msg",), ("data", "task_status_msg")):  # fmt: skip
            value: Any = body
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if isinstance(value, list) and value and isinstance(value[0], Mapping):
                value = "; ".join(str(item.get("msg", item)) for item in value)
            if isinstance(value, str) and value.strip():
                return value.strip()
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def default_classify(provider: str) -> Classifier:
    """HTTP status → normalised error, for providers whose errors follow HTTP semantics."""

    def classify(response: httpx.Response, body: Any) -> ProviderError:
        status = response.status_code
        message = provider_message(body, f"HTTP {status}")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status in (401, 403):
            code = ErrorCode.AUTH
        elif status == 402:
            code = ErrorCode.INSUFFICIENT_FUNDS
        elif status == 429:
            code = ErrorCode.RATE_LIMITED
        elif status >= 500 or status in (408, 409):
            code = ErrorCode.PROVIDER_TRANSIENT
        else:
            code = ErrorCode.INVALID_INPUT
        return ProviderError(code, message, provider=provider, http_status=status, retry_after=retry_after)

    return classify


def _decode(response: httpx.Response) -> Any:
    """JSON body, or the text when it is not JSON; raises ValueError for an unreadable 2xx."""
    text = response.text
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        if response.is_success:
            raise
        return text


class ProviderHTTP:
    """One provider's HTTP conversation: base URL, auth, timeouts, retries, error mapping."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        provider: str,
        base_url: str,
        auth_headers: Callable[[], Mapping[str, str]],
        classify: Classifier | None = None,
        read_timeout_s: float = 30.0,
        submit_timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.provider = provider
        self.base_url = base_url.rstrip("/") + "/"
        self.auth_headers = auth_headers
        self.classify = classify or default_classify(provider)
        self.read_timeout = httpx.Timeout(read_timeout_s, connect=min(10.0, read_timeout_s))
        self.submit_timeout = httpx.Timeout(submit_timeout_s, connect=min(10.0, submit_timeout_s))
        self.retry = retry or RetryPolicy()
        self.calls = 0  # every HTTP request made, for metrics and tests
        self.observer: RequestObserver | None = None

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url, path_or_url.lstrip("/")) if "://" not in path_or_url else path_or_url

    def _error(self, code: ErrorCode, message: str, **kw: Any) -> ProviderError:
        return ProviderError(code, message, provider=self.provider, **kw)

    async def get(self, path_or_url: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """An idempotent read, retried until it answers or the attempts run out."""
        url = self.url(path_or_url)
        last: ProviderError | None = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await self._once("GET", url, params=params, timeout=self.read_timeout)
            except ProviderError as exc:
                if not exc.code.retryable:
                    raise
                last = exc
            if attempt < self.retry.attempts:
                wait = self.retry.delay(attempt, last.retry_after)
                log.info("%s GET %s failed (%s); retry %d in %.2fs", self.provider, safe_url(url), last.code,
                         attempt, wait)  # fmt: skip
                await asyncio.sleep(wait)
        assert last is not None
        raise last

    async def submit(
        self,
        path_or_url: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a job once. Only a failure that proves nothing was received is retried (connect errors)."""
        url = self.url(path_or_url)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await self._once("POST", url, json_body=json_body, params=params, headers=headers,
                                        timeout=self.submit_timeout, ambiguous=True)  # fmt: skip
            except _NotSent as exc:
                if attempt == self.retry.attempts:
                    raise self._error(ErrorCode.PROVIDER_TRANSIENT, f"could not connect: {exc}") from None
                await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def send(
        self,
        method: str,
        path_or_url: str,
        *,
        json_body: Any = None,
        files: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """A single request whose repetition would be harmless but is not needed (cancel, upload).
        `content` sends a raw body (e.g. a file to a CDN); `headers` add to or replace the auth headers."""
        return await self._once(method, self.url(path_or_url), json_body=json_body, files=files, params=params,
                                content=content, headers=headers, timeout=self.submit_timeout)  # fmt: skip

    async def _once(
        self,
        method: str,
        url: str,
        *,
        timeout: httpx.Timeout,
        json_body: Any = None,
        files: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        ambiguous: bool = False,
    ) -> Any:
        self.calls += 1
        merged = {**self.auth_headers(), **(headers or {})}
        try:
            response = await self.client.request(
                method, url, json=json_body, files=files, content=content, params=params, headers=merged,
                timeout=timeout,
            )  # fmt: skip
        except _NOT_SENT as exc:
            self._observe(method, type(exc).__name__)
            if ambiguous:
                raise _NotSent(type(exc).__name__) from None
            raise self._error(ErrorCode.PROVIDER_TRANSIENT, f"could not connect ({type(exc).__name__})") from None
        except (*_MAYBE_SENT, httpx.TransportError) as exc:
            self._observe(method, type(exc).__name__)
            what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"broke off ({type(exc).__name__})"
            if ambiguous:
                raise self._error(
                    ErrorCode.SUBMIT_AMBIGUOUS, f"the request {what} after it was sent; it may have been accepted"
                ) from None
            raise self._error(ErrorCode.PROVIDER_TRANSIENT, f"the request {what}") from None
        log.debug("%s %s %s -> %d", self.provider, method, safe_url(url), response.status_code)
        self._observe(method, response.status_code)
        try:
            body = _decode(response)
        except ValueError:
            if ambiguous:
                raise self._error(
                    ErrorCode.SUBMIT_AMBIGUOUS, "the provider accepted the request but its reply was unreadable"
                ) from None
            raise self._error(ErrorCode.PROVIDER_TRANSIENT, "the provider's reply was not valid JSON") from None
        if response.is_success:
            return body
        error = self.classify(response, body)
        if ambiguous and response.status_code in (502, 504):
            # A gateway error may arrive after the backend took the job: we cannot know.
            raise self._error(ErrorCode.SUBMIT_AMBIGUOUS, f"{error.message} (a gateway error; the job may exist)",
                              http_status=response.status_code)  # fmt: skip
        raise error

    def _observe(self, method: str, status: int | str) -> None:
        if self.observer is not None:
            try:
                self.observer(self.provider, method, status)
            except Exception:  # counting must never break a provider call
                log.exception("the request observer failed")


class _NotSent(Exception):
    pass


def policy_from(settings: Any) -> RetryPolicy:
    return RetryPolicy(
        attempts=settings.http_retries, base_s=settings.http_backoff_s, cap_s=settings.http_backoff_max_s
    )


# Words providers use when a failed task was stopped by moderation rather than by a fault.
_POLICY_WORDS = (
    "content policy", "content_policy", "policy violation", "nsfw", "sensitive", "moderation", "risk control",
    "inappropriate", "safety", "prohibited", "violat",
)  # fmt: skip


def failure_code(message: str) -> ErrorCode:
    """Classify a failed task from its message, for providers that report failures only as text."""
    lowered = message.lower()
    if any(word in lowered for word in _POLICY_WORDS):
        return ErrorCode.CONTENT_POLICY
    if "timeout" in lowered or "timed out" in lowered:
        return ErrorCode.GENERATION_TIMEOUT
    if any(word in lowered for word in ("download", "fetch", "unreachable url", "cannot access")):
        return ErrorCode.INPUT_FETCH_FAILED
    if any(word in lowered for word in ("invalid", "parameter", "must be", "not supported")):
        return ErrorCode.INVALID_INPUT
    return ErrorCode.PROVIDER_TRANSIENT
