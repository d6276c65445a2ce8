"""Identifiers: name-based UUIDs (RFC 4122 version 5), random ones
(version 4) and time-ordered ones (RFC 9562 version 7) as strings.

`uuid5(namespace, name)` is `str(uuid.uuid5(namespace, name))` without the
`UUID` object: the dispatcher derives a message id and a view event id per
recipient, ingest an event id per event, thousands a second, and the
object's construction and formatting cost more than the SHA-1."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid

# A run of exactly ten digits, as the log redactor finds an NHS number
# (hub/observability/logging.py `_BARE_TEN`): in a UUID only its last group
# (twelve hex digits) can hold one, about 1 in 60 random ids. An id the hub
# mints is drawn again until it holds none, so its logs never mask it and it
# can always be traced (a name-based `uuid5` cannot be drawn again).
_BARE_TEN = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")


def uuid5(namespace: uuid.UUID | bytes, name: str) -> str:
    """RFC 4122 section 4.3: SHA-1 of the namespace's bytes and the name,
    version 5, the RFC 4122 variant; equal to `str(uuid.uuid5(namespace, name))`.
    `namespace` may be given as its 16 bytes (`UUID.bytes`, a property: two
    calls each time), taken once by a caller that derives many ids in it."""
    prefix = namespace if type(namespace) is bytes else namespace.bytes  # type: ignore[union-attr]
    digest = bytearray(hashlib.sha1(prefix + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid4() -> str:
    """A random UUID (RFC 4122 version 4) as a string: `str(uuid.uuid4())`
    without the UUID object (a third of the time; ingest makes one a change):
    16 bytes from `os.urandom`, as `uuid.uuid4` takes them, with the version
    and variant bits set as it sets them."""
    while True:
        b = bytearray(os.urandom(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        if not _BARE_TEN.search(h[20:]):  # drawn again, about 1 in 60 (`_BARE_TEN`)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) as a string: the Unix time in
    milliseconds (48 bits, big-endian), the version, 74 random bits and the
    RFC 4122 variant. Ids made later sort after those made earlier (within a
    millisecond in any order), so a B-tree index keyed by them takes each
    new one at its right-hand edge rather than on a random page: the council
    files' bulk path makes 500 change ids a transaction, each the key of two
    indexes (`register_changes`, `service_levels`)."""
    while True:
        b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
        b[6] = (b[6] & 0x0F) | 0x70
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        if not _BARE_TEN.search(h[20:]):  # drawn again, about 1 in 60 (`_BARE_TEN`)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
