"""Signatures as receivers check them: fibric.webhooks.verify and a third-party Standard Webhooks library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import standardwebhooks

from fibric import webhooks
from fibric.controller import delivery

BODY = json.dumps({"id": "evt_1", "object": "event", "type": "plan.proposed", "data": {}}).encode()


def test_verify_accepts_a_delivery_and_returns_the_event() -> None:
    secret = webhooks.new_secret()
    now = int(time.time())
    header = webhooks.fibric_signature([secret], now, BODY)
    assert webhooks.verify(BODY, header, secret) == json.loads(BODY)
    assert webhooks.verify(BODY.decode(), header, secret)["id"] == "evt_1"


def test_the_signature_is_stripe_style_hmac_of_timestamp_and_body() -> None:
    # What any Stripe-style verifier computes: HMAC-SHA256(secret, "<t>.<body>") as hex.
    secret = webhooks.new_secret()
    header = webhooks.fibric_signature([secret], 1_800_000_000, BODY)
    expected = hmac.new(secret.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda body, header, secret: (body + b" ", header, secret), "matches"),
        (lambda body, header, secret: (body, header, webhooks.new_secret()), "matches"),
        (lambda body, header, secret: (body, header.replace("v1=", "v0="), secret), "no v1"),
        (lambda body, header, secret: (body, header.split(",")[1], secret), "t="),
        (lambda body, header, secret: (body, "", secret), "t="),
        (lambda body, header, secret: (body, header + ",t=1", secret), "t="),
    ],
)
def test_verify_rejects_forged_or_malformed_deliveries(tamper: object, message: str) -> None:
    secret = webhooks.new_secret()
    header = webhooks.fibric_signature([secret], int(time.time()), BODY)
    body, header, secret = tamper(BODY, header, secret)  # type: ignore[operator]
    with pytest.raises(webhooks.SignatureVerificationError, match=message):
        webhooks.verify(body, header, secret)


@pytest.mark.parametrize(("offset", "message"), [(-301, "too old"), (301, "in the future")])
def test_verify_rejects_stale_and_future_timestamps(offset: int, message: str) -> None:
    secret = webhooks.new_secret()
    now = time.time()
    header = webhooks.fibric_signature([secret], int(now) + offset, BODY)
    with pytest.raises(webhooks.SignatureVerificationError, match=message):
        webhooks.verify(BODY, header, secret, now=now)
    assert webhooks.verify(BODY, header, secret, tolerance=400, now=now)["id"] == "evt_1"


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    header = webhooks.fibric_signature([new, old], int(time.time()), BODY)
    assert header.count("v1=") == 2
    for secret in (old, new):
        assert webhooks.verify(BODY, header, secret)["id"] == "evt_1"
    with pytest.raises(webhooks.SignatureVerificationError):
        webhooks.verify(BODY, header, webhooks.new_secret())


def test_standard_webhooks_library_verifies_the_headers() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    headers = delivery.signed_headers("evt_1", BODY, [new, old], int(time.time()))
    assert headers["webhook-id"] == "evt_1"
    for secret in (old, new):  # the library takes the whsec_ secret exactly as Fibric showed it
        assert standardwebhooks.Webhook(secret).verify(BODY, headers)["id"] == "evt_1"
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhooks.new_secret()).verify(BODY, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new).verify(BODY + b" ", headers)


def test_a_secret_from_secret_env_that_is_not_base64_signs_standard_webhooks_with_its_bytes() -> None:
    secret = "a passphrase from the environment"
    headers = delivery.signed_headers("evt_2", BODY, [secret], int(time.time()))
    assert standardwebhooks.Webhook(secret.encode()).verify(BODY, headers)["id"] == "evt_1"
    assert webhooks.verify(BODY, headers["Fibric-Signature"], secret)["id"] == "evt_1"


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_"):], validate=True)) == 32
    assert secret != webhooks.new_secret()
