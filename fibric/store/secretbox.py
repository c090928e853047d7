"""Encryption at rest for webhook signing secrets (AES-256-GCM).

A signing secret must be readable by the dispatcher, so it cannot be hashed
like an API key; it is sealed instead, with a key that never enters the
database: FIBRIC_SECRET_KEY (base64 of 32 bytes, which replicas sharing a
PostgreSQL store must share), or else a `secret.key` file in the data dir,
created with mode 0600 the first time a secret is sealed. A copy of the
database alone does not reveal any secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fibric import errors, settings
from fibric.store import backends, filemodes
from fibric.store import state as state_module

SEALED_PREFIX = "aesgcm1:"
KEY_FILE = "secret.key"


class SecretBox:
    """Seals and opens short secrets; `context` (the tenant id) is bound as associated data."""

    def __init__(self, *, key: str | None = None, key_file: Path | None = None) -> None:
        if key is None and key_file is None:
            raise ValueError("a SecretBox needs a key or a key file")
        self._configured = key
        self._key_file = key_file
        self._aead: AESGCM | None = None
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._cipher().encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, token: str, context: str) -> str:
        """The plaintext of a sealed value; PermanentError if it was sealed with another key."""
        if not token.startswith(SEALED_PREFIX):
            return token  # written before secrets were sealed; sealed again on its next rotation
        try:
            raw = base64.b64decode(token[len(SEALED_PREFIX):], validate=True)
            return self._cipher().decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as e:
            raise errors.PermanentError(
                "a sealed secret cannot be decrypted: FIBRIC_SECRET_KEY or the data dir's secret.key "
                "is not the key it was sealed with, or the value was sealed for another tenant or name"
            ) from e

    def fingerprint(self, plaintext: str, context: str) -> str:
        """A short HMAC of a secret under a key derived from the box's: tells values apart, reveals none."""
        key = hmac.new(self._load_key_once(), b"fibric-fingerprint", hashlib.sha256).digest()
        digest = hmac.new(key, f"{context}\0{plaintext}".encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest[:16]}"

    def _load_key_once(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load_key()
            return self._key

    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is None:
                if self._key is None:
                    self._key = self._load_key()
                self._aead = AESGCM(self._key)
            return self._aead

    def _load_key(self) -> bytes:
        if self._configured is not None:
            return _decode_key(self._configured, "FIBRIC_SECRET_KEY")
        path = self._key_file or Path(KEY_FILE)  # __init__ ensures one of the two
        return _decode_key(_read_or_create(path), str(path))


def for_store(state: state_module.StateStore, config: settings.Settings) -> SecretBox:
    """The box of this deployment: FIBRIC_SECRET_KEY, else `secret.key` beside SQLite's state.db
    (the data dir), else in the configured data dir."""
    if config.webhooks.secret_key:
        return SecretBox(key=config.webhooks.secret_key)
    backend = state.backend
    folder = backend.path.parent if isinstance(backend, backends.SQLiteBackend) else config.store.data_dir
    return SecretBox(key_file=folder / KEY_FILE)


def new_key() -> str:
    """A fresh key for FIBRIC_SECRET_KEY."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise errors.PermanentError(f"{where} is not base64") from e
    if len(key) != 32:
        raise errors.PermanentError(f"{where} must hold 32 bytes (base64), not {len(key)}")
    return key


def _read_or_create(path: Path) -> str:
    """The key file's content, creating it (0600) if absent.

    The key is written to a private temporary file first and then linked into
    place, which fails if another process got there first: every process ends
    up with the one key that won.
    """
    if path.exists():
        filemodes.warn_if_shared(path)
        return path.read_text("ascii")
    filemodes.make_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(new_key())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text("ascii")
