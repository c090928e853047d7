"""How deliveries are signed, and how a receiver checks them.

One secret, two schemes, each verifiable by its own ecosystem's code as is:

- `Fibric-Signature: t=<unix ts>,v1=<hex>`: HMAC-SHA256 of `<ts>.<raw body>`,
  keyed with the secret string's UTF-8 bytes (as Stripe-style verifiers do).
- Standard Webhooks (`webhook-id`, `webhook-timestamp`,
  `webhook-signature: v1,<base64>` over `<id>.<ts>.<body>`), keyed with the
  base64-decoded part after `whsec_`, as that spec says.

Secrets Fibric generates are `whsec_` + base64 of 32 random bytes, so both
hold. During a rotation both secrets sign, and each header carries two v1
signatures; a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Sequence
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds a delivery's timestamp may differ from the receiver's clock


class SignatureVerificationError(ValueError):
    """The delivery is not proven to come from Fibric: reject it (answer 400)."""


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def fibric_signature(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The `Fibric-Signature` header value: one v1 entry per secret, newest first."""
    signed = f"{timestamp}.".encode() + body
    entries = [f"v1={_hmac(secret.encode('utf-8'), signed).hex()}" for secret in secrets]
    return ",".join([f"t={timestamp}", *entries])


def standard_signature(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value: space-separated `v1,<base64>` entries."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(_hmac(standard_key(secret), signed)).decode("ascii") for secret in secrets
    )


def standard_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks libraries derive from a secret: base64 after `whsec_`.

    A secret that is not `whsec_<base64>` (one set through `secret_env`) signs
    with its UTF-8 bytes; receivers pass those bytes to their library.
    """
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode("utf-8")


def verify(
    payload: bytes | str,
    header: str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> Any:
    """Check a delivery's `Fibric-Signature` header; returns the decoded event.

    `payload` must be the raw request body, byte for byte. Raises
    SignatureVerificationError when the header is malformed, no v1 signature
    matches `secret` (compared in constant time), or the timestamp is more
    than `tolerance` seconds in the past or in the future (replays).
    """
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    timestamp, candidates = _parse(header)
    expected = _hmac(secret.encode("utf-8"), f"{timestamp}.".encode() + body).hex()
    matched = False
    for candidate in candidates:  # check every entry, so timing does not reveal which matched
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureVerificationError("no v1 signature in Fibric-Signature matches the secret")
    clock = time.time() if now is None else now
    if timestamp < clock - tolerance:
        raise SignatureVerificationError("Fibric-Signature timestamp is too old")
    if timestamp > clock + tolerance:
        raise SignatureVerificationError("Fibric-Signature timestamp is in the future")
    try:
        return json.loads(body)
    except ValueError as e:
        raise SignatureVerificationError(f"payload is not JSON: {e}") from e


def _parse(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    candidates: list[str] = []
    for item in (header or "").split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value.lower())
    if len(timestamps) != 1 or not timestamps[0].isdigit() or len(timestamps[0]) > 12:
        raise SignatureVerificationError("Fibric-Signature needs exactly one numeric t= entry")
    if not candidates:
        raise SignatureVerificationError("Fibric-Signature has no v1= signature")
    return int(timestamps[0]), candidates


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()
