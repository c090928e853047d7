"""For receivers: verify that a webhook delivery came from Fibric (docs/webhooks.md).

Standard library only, so a receiver can vendor this package without the rest
of Fibric. `verify` checks the `Fibric-Signature` header; the same deliveries
also carry Standard Webhooks headers that any Standard Webhooks library checks.
"""

from fibric.webhooks.signing import (
    DEFAULT_TOLERANCE,
    SECRET_PREFIX,
    SignatureVerificationError,
    fibric_signature,
    new_secret,
    standard_signature,
    verify,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "SECRET_PREFIX",
    "SignatureVerificationError",
    "fibric_signature",
    "new_secret",
    "standard_signature",
    "verify",
]
