"""Signed checkpoints of the receipt ledger: each tenant's chain head, kept outside the database.

A hash chain shows an edit, a deletion or a reordering, but not a chain that
was truncated or rebuilt whole with recomputed hashes: those look whole from
inside. A checkpoint records, per tenant, the head of the chain (tenant_seq,
receipt id, hash, time) and a 64-bit fingerprint of every receipt's chain hash,
signed with an Ed25519 key the ledger never sees. Since each chain hash covers
everything before it, the first fingerprint that no longer matches names the
first rewritten receipt; a chain shorter than the checkpoint was truncated.
Fingerprints cost 8 bytes per receipt (about 11 MB of base64 per million).

The file is JSON; the signature covers its canonical JSON without the
`signature` field, and verify checks it with the public key the auditor keeps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fibric import errors, timefmt
from fibric.store import receipt_store

FORMAT = "fibric-receipts-checkpoint/1"
FINGERPRINT_BYTES = 8


@dataclass(frozen=True)
class Head:
    """One tenant's chain as the checkpoint saw it."""

    tenant_id: str
    tenant_seq: int
    receipt_id: str
    hash: str
    at: str  # when the checkpoint was taken
    fingerprints: bytes  # FINGERPRINT_BYTES per receipt, in tenant_seq order

    def fingerprint(self, tenant_seq: int) -> bytes:
        start = (tenant_seq - 1) * FINGERPRINT_BYTES
        return self.fingerprints[start:start + FINGERPRINT_BYTES]


@dataclass(frozen=True)
class Checkpoint:
    created_at: str
    key_id: str
    tenants: Mapping[str, Head]


def fingerprint(chain_hash: str) -> bytes:
    return bytes.fromhex(chain_hash)[:FINGERPRINT_BYTES]


def generate_key(private_path: Path) -> Path:
    """Write a new Ed25519 key pair: the private key (PEM, mode 0600) and `<path>.pub`."""
    key = ed25519.Ed25519PrivateKey.generate()
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise errors.Conflict(f"{path} exists; refusing to overwrite a key")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path


def create(record: Any, key_path: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """The signed checkpoint document of every tenant's chain of record (receipt_store.StoreLedger)."""
    key = _private_key(key_path)
    taken = timefmt.rfc3339(now or datetime.now(UTC))
    tenants: list[dict[str, Any]] = []
    for tenant_id in record.tenants():
        # tenant_seq, id, hash
        rows = [(row[1], row[2], row[receipt_store.HASH]) for row in record.chain(tenant_id)]
        prints = b"".join(fingerprint(str(h)) for _, _, h in rows)
        tenant_seq, receipt_id, head_hash = rows[-1]
        tenants.append({"tenant_id": tenant_id, "tenant_seq": int(tenant_seq), "receipt_id": receipt_id,
                        "hash": head_hash, "fingerprints": base64.b64encode(prints).decode()})
    body = {"format": FORMAT, "created_at": taken, "key_id": _key_id(key.public_key()), "tenants": tenants}
    return {**body, "signature": base64.b64encode(key.sign(_canonical(body))).decode()}


def load(path: Path, public_key_path: Path) -> Checkpoint:
    """The checkpoint in `path`, once its signature verifies with the public key; PermanentError if not."""
    try:
        document = json.loads(path.read_text())
        public = serialization.load_pem_public_key(public_key_path.read_bytes())
    except (OSError, ValueError) as e:
        raise errors.PermanentError(f"cannot read the checkpoint or its public key: {e}") from e
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise errors.PermanentError(f"{public_key_path} is not an Ed25519 public key")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise errors.PermanentError(f"{path} is not a Fibric receipts checkpoint ({FORMAT})")
    body = {k: v for k, v in document.items() if k != "signature"}
    try:
        public.verify(base64.b64decode(str(document.get("signature", "")), validate=True), _canonical(body))
    except (InvalidSignature, ValueError) as e:
        raise errors.PermanentError(
            f"the checkpoint's signature does not verify with {public_key_path}: the checkpoint was altered "
            f"or signed with another key") from e
    try:
        heads = {t["tenant_id"]: Head(t["tenant_id"], int(t["tenant_seq"]), t["receipt_id"], t["hash"],
                                      document["created_at"], base64.b64decode(t["fingerprints"]))
                 for t in document["tenants"]}
    except (KeyError, TypeError, ValueError) as e:
        raise errors.PermanentError(f"{path} is malformed: {e}") from e
    return Checkpoint(document["created_at"], document["key_id"], heads)


def write(document: Mapping[str, Any], out: Path) -> None:
    out.write_text(json.dumps(document, indent=1) + "\n")


def _private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise errors.PermanentError(f"cannot read the signing key {path}: {e}") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise errors.PermanentError(f"{path} is not an Ed25519 private key")
    return key


def _key_id(public: ed25519.Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
