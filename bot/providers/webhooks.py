"""Verifying provider callbacks before anything in them is believed.

WaveSpeed signs with HMAC-SHA256 (`webhook-id`, `webhook-timestamp`, `webhook-signature: v3,<hex>`),
fal with Ed25519 keys published as JWKS. Providers that sign nothing get an unguessable per-job token in
the callback URL, and reelbot re-polls the provider before acting on what such a callback says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.providers.base import WebhookRejected

MAX_AGE_S = 300


def new_token() -> str:
    """A per-job secret for unsigned callback URLs."""
    return secrets.token_urlsafe(24)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get(name.lower())
    if not value:
        raise WebhookRejected(f"missing {name} header")
    return value


def _fresh(timestamp: str, now: float | None, max_age_s: float) -> None:
    try:
        sent = float(timestamp)
    except ValueError:
        raise WebhookRejected("timestamp is not a number") from None
    if abs((now if now is not None else time.time()) - sent) > max_age_s:
        raise WebhookRejected("timestamp is too old or in the future")


def verify_wavespeed(
    headers: Mapping[str, str], body: bytes, secret: str, *, now: float | None = None, max_age_s: float = MAX_AGE_S
) -> str:
    """Check a WaveSpeed signature; returns the webhook id (for replay protection)."""
    webhook_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    _fresh(timestamp, now, max_age_s)
    # The key is the secret without its `whsec_` prefix, used as-is (not base64-decoded).
    key = secret.removeprefix("whsec_").encode()
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v3" and hmac.compare_digest(value, expected):
            return webhook_id
    raise WebhookRejected("signature does not match")


def ed25519_keys_from_jwks(jwks: Mapping[str, object]) -> list[Ed25519PublicKey]:
    keys = []
    for key in jwks.get("keys", []) or []:  # type: ignore[union-attr]
        if isinstance(key, Mapping) and key.get("kty") == "OKP" and key.get("crv") == "Ed25519" and key.get("x"):
            raw = base64.urlsafe_b64decode(str(key["x"]) + "=" * (-len(str(key["x"])) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
    return keys


def verify_fal(
    headers: Mapping[str, str],
    body: bytes,
    keys: list[Ed25519PublicKey],
    *,
    now: float | None = None,
    max_age_s: float = MAX_AGE_S,
) -> str:
    """Check a fal signature; returns the request id."""
    request_id = _header(headers, "x-fal-webhook-request-id")
    user_id = _header(headers, "x-fal-webhook-user-id")
    timestamp = _header(headers, "x-fal-webhook-timestamp")
    signature_hex = _header(headers, "x-fal-webhook-signature")
    _fresh(timestamp, now, max_age_s)
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookRejected("signature is not hex") from None
    for key in keys:
        try:
            key.verify(signature, message)
            return request_id
        except InvalidSignature:
            continue
    raise WebhookRejected("signature does not match any published key")


class ReplayGuard:
    """Remembers delivery ids for the max age, so a replayed (validly signed) callback is refused."""

    def __init__(self, max_age_s: float = MAX_AGE_S, max_entries: int = 100_000) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, delivery_id: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._seen and (
            next(iter(self._seen.values())) < now - self.max_age_s or len(self._seen) > self.max_entries
        ):
            self._seen.popitem(last=False)
        if delivery_id in self._seen:
            raise WebhookRejected("this delivery was already received (replay)")
        self._seen[delivery_id] = now
