"""Personal data at rest: Fernet encryption, keyed hashes for look-ups, API key hashing."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class DataProtector:
    """Encrypts personal fields and derives a keyed index for NHS numbers.

    The NHS number is never stored in clear: a person is found by HMAC-SHA256
    of the number under a key derived from the data key, so a stolen database
    does not reveal who is on the register.
    """

    # Tokens this process made recently, with their plaintext: the dispatcher
    # encrypts each queued message and the deliverer decrypts it moments later
    # (and ingest encrypts details the dispatcher then reads); a token made
    # here is not decrypted again while it is held. Bounded by count and bytes,
    # oldest out first; only this process's memory, never written anywhere.
    recent_max_items = 2048
    recent_max_bytes = 8 * 1024 * 1024

    def __init__(self, key: str | bytes) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        self._fernet = Fernet(key_bytes)
        self._index_key = hashlib.sha256(b"s117hub-index:" + key_bytes).digest()
        self._recent: dict[bytes, bytes] = {}
        self._recent_bytes = 0
        self._recent_lock = threading.Lock()

    @classmethod
    def from_settings(cls, data_key: str | None, key_file: Path) -> "DataProtector":
        if data_key:
            return cls(data_key)
        from hub.store.private_files import private_dir, private_file

        if key_file.exists():
            private_file(key_file)  # narrowed to 0600 if an older hub left it wider
            return cls(key_file.read_bytes().strip())
        private_dir(key_file.parent)
        key = Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return cls(key)

    def encrypt(self, plaintext: bytes) -> bytes:
        token = self._fernet.encrypt(plaintext)
        size = len(token) + len(plaintext)
        with self._recent_lock:
            recent = self._recent
            recent[token] = bytes(plaintext)
            self._recent_bytes += size
            while len(recent) > self.recent_max_items or self._recent_bytes > self.recent_max_bytes:
                old = next(iter(recent))
                self._recent_bytes -= len(old) + len(recent.pop(old))
        return token

    def decrypt(self, token: bytes) -> bytes:
        held = self._recent.get(token) if type(token) is bytes else None
        if held is not None:
            return held
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


SIGNATURE_TOLERANCE_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)


def sign_webhook(secret: str, timestamp: int, event_id: str, body: bytes) -> str:
    """Hex HMAC-SHA256, under the subscription's secret, of the bytes
    `<timestamp>.<event id>.<body>`: the event id is signed with the body, so
    a captured message cannot be replayed under another event id."""
    signed = f"{timestamp}.{event_id}.".encode("utf-8", "surrogatepass") + body
    return hmac.new(secret.encode("utf-8", "surrogatepass"), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, event_id: str, body: bytes, now: int | None = None) -> str:
    """The `S117-Signature` header value for one webhook POST."""
    ts = int(time.time()) if now is None else now
    return f"t={ts},v1={sign_webhook(secret, ts, event_id, body)}"


def verify_webhook(secret: str, header: str, body: bytes, *, event_id: str,
                   tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS, now: int | None = None) -> bool:
    """What a subscriber runs: True only if `S117-Signature` (`t=<unix>,v1=<hex>`,
    possibly several v1 during a secret change) signs `t.event_id.body` under
    `secret` and t is within `tolerance_seconds` of now, in either direction.
    Never raises, whatever the header holds."""
    if not isinstance(header, str) or not isinstance(event_id, str):
        return False
    timestamps, candidates = [], []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value.strip())
        elif key == "v1":
            candidates.append(value.strip())
    if len(timestamps) != 1 or _TIMESTAMP.fullmatch(timestamps[0]) is None or not candidates:
        return False
    ts = int(timestamps[0])
    now = int(time.time()) if now is None else now
    if abs(now - ts) > tolerance_seconds:
        return False
    expected = sign_webhook(secret, ts, event_id, body).encode("ascii")
    ok = False
    for candidate in candidates:
        # Bytes, not str: compare_digest refuses non-ASCII str (a TypeError).
        ok |= hmac.compare_digest(expected, candidate.encode("utf-8", "surrogatepass"))
    return ok


def verify_webhook_request(secret: str, headers: Mapping[str, str], body: bytes, **kwargs: int) -> bool:
    """`verify_webhook` from a request's headers (`S117-Signature`, `S117-Event-Id`)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return verify_webhook(secret, lowered.get("s117-signature", ""), body,
                          event_id=lowered.get("s117-event-id", ""), **kwargs)
