"""Personal data at rest: AES-256-GCM encryption (Fernet tokens written
before it still read), keyed hashes for look-ups, API key hashing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# A token of this hub: this byte (the format), a random 96-bit nonce, then
# AES-256-GCM's ciphertext and 128-bit tag. A Fernet token (what the hub
# wrote before) is URL-safe base64 text and never starts with this byte.
_GCM = b"\x01"
_NONCE = 12
_DECRYPT_FAILED = "stored data cannot be decrypted with the configured data key"


class DataProtector:
    """Encrypts personal fields and derives a keyed index for NHS numbers.

    The NHS number is never stored in clear: a person is found by HMAC-SHA256
    of the number under a key derived from the data key, so a stolen database
    does not reveal who is on the register.

    Fields are sealed with AES-256-GCM under a key derived (HKDF-SHA256) from
    the data key, a random nonce each: about 1.5 us for a queued FHIR message
    where Fernet (AES-CBC, HMAC and URL-safe base64 in Python) took 23 us to
    encrypt and 49 us to decrypt, and the dispatcher seals one message per
    recipient that the deliverer opens moments later. Random 96-bit nonces
    keep well inside GCM's bound (2**32 messages a key) at thousands a
    second for decades; the data key file is unchanged, and tokens written
    by earlier versions (Fernet) still decrypt.
    """

    def __init__(self, key: str | bytes) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        self._fernet = Fernet(key_bytes)  # validates the key; reads tokens written before AES-GCM
        self._index_key = hashlib.sha256(b"s117hub-index:" + key_bytes).digest()
        self._index_hmac = hmac.new(self._index_key, digestmod=hashlib.sha256)  # keyed once, copied per value
        self._aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                 info=b"s117hub data at rest: AES-256-GCM v1")
                            .derive(base64.urlsafe_b64decode(key_bytes)))

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
        """A binary token (for the LargeBinary columns); `encrypt_text` for text."""
        nonce = os.urandom(_NONCE)
        return _GCM + nonce + self._aead.encrypt(nonce, plaintext, None)

    def decrypt(self, token: bytes) -> bytes:
        """A token of `encrypt` (or a Fernet token written before); ValueError if it
        was not made under this key or was altered, without echoing any of it."""
        try:
            if token[:1] == _GCM:
                view = memoryview(token)
                return self._aead.decrypt(view[1:1 + _NONCE], view[1 + _NONCE:], None)
            return self._fernet.decrypt(token)
        except (InvalidTag, InvalidToken, ValueError, TypeError) as exc:  # wrong key or altered
            raise ValueError(_DECRYPT_FAILED) from exc

    def encrypt_text(self, plaintext: str) -> str:
        """`encrypt` as ASCII text, for a value kept inside a JSON document."""
        return base64.b64encode(self.encrypt(plaintext.encode())).decode("ascii")

    def decrypt_text(self, token: str) -> str:
        """The text of `encrypt_text` (or of a Fernet token, which is text already)."""
        if token.startswith("gAAAAA"):  # Fernet: version 0x80, a timestamp's zero high bytes
            return self.decrypt(token.encode()).decode()
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(_DECRYPT_FAILED) from None
        return self.decrypt(raw).decode()

    def index(self, value: str) -> str:
        """HMAC-SHA256 of `value` under the index key, as hex: a copy of the HMAC keyed once
        (the standard library's, not hand-rolled: 1.2 us against hmac.new's 1.7, which keys it
        again each call; ingest indexes every change's NHS number)."""
        mac = self._index_hmac.copy()
        mac.update(value.encode())
        return mac.hexdigest()


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
