"""Personal data at rest: Fernet encryption, keyed hashes for look-ups, API key hashing."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class DataProtector:
    """Encrypts personal fields and derives a keyed index for NHS numbers.

    The NHS number is never stored in clear: a person is found by HMAC-SHA256
    of the number under a key derived from the data key, so a stolen database
    does not reveal who is on the register.
    """

    def __init__(self, key: str | bytes) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        self._fernet = Fernet(key_bytes)
        self._index_key = hashlib.sha256(b"s117hub-index:" + key_bytes).digest()

    @classmethod
    def from_settings(cls, data_key: str | None, key_file: Path) -> "DataProtector":
        if data_key:
            return cls(data_key)
        if key_file.exists():
            return cls(key_file.read_bytes().strip())
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return cls(key)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:  # wrong key: say so without echoing data
            raise ValueError("stored data cannot be decrypted with the configured data key") from exc

    def index(self, value: str) -> str:
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).hexdigest()


def new_api_key() -> str:
    return "s117_" + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    # API keys are 256-bit random tokens, so a plain SHA-256 is enough (no
    # dictionary to attack); compare digests in constant time.
    return hashlib.sha256(api_key.encode()).hexdigest()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def verify_webhook(secret: str, header: str, body: bytes, tolerance_seconds: int = 300, now: int | None = None) -> bool:
    """Verify an `S117-Signature: t=<unix>,v1=<hex>` header (what subscribers run)."""
    import time

    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = int(time.time()) if now is None else now
    if abs(now - ts) > tolerance_seconds:
        return False
    expected = sign_webhook(secret, ts, body)
    return hmac.compare_digest(expected, parts.get("v1", ""))
