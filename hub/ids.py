"""Identifiers: name-based UUIDs (RFC 4122 version 5) and random ones
(version 4) as strings.

`uuid5(namespace, name)` is `str(uuid.uuid5(namespace, name))` without the
`UUID` object: the dispatcher derives a message id and a view event id per
recipient, ingest an event id per event, thousands a second, and the
object's construction and formatting cost more than the SHA-1."""

from __future__ import annotations

import hashlib
import os
import uuid


def uuid5(namespace: uuid.UUID, name: str) -> str:
    """RFC 4122 section 4.3: SHA-1 of the namespace's bytes and the name,
    version 5, the RFC 4122 variant; equal to `str(uuid.uuid5(namespace, name))`."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid4() -> str:
    """A random UUID (RFC 4122 version 4) as a string: `str(uuid.uuid4())`
    without the UUID object (a third of the time; ingest makes one a change):
    16 bytes from `os.urandom`, as `uuid.uuid4` takes them, with the version
    and variant bits set as it sets them."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
