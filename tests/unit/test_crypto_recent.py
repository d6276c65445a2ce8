"""DataProtector keeps the plaintext of the tokens it made recently, so a
message queued and delivered by the same process is not decrypted again;
bounded, and never a way round the key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from hub.crypto import DataProtector


def test_a_token_made_here_is_not_decrypted_again_and_others_still_are(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    here, elsewhere = DataProtector(key), DataProtector(key)
    token = here.encrypt(b'{"resourceType":"Bundle"}')
    calls: list[bytes] = []
    real = here._fernet.decrypt
    monkeypatch.setattr(here._fernet, "decrypt", lambda t, *a: calls.append(t) or real(t, *a))
    assert here.decrypt(token) == b'{"resourceType":"Bundle"}'
    assert calls == []  # held: no decryption
    other = elsewhere.encrypt(b"details")  # another process's token (same key)
    assert here.decrypt(other) == b"details" and calls == [other]
    with pytest.raises(ValueError, match="cannot be decrypted"):
        DataProtector(Fernet.generate_key()).decrypt(token)  # another key: held tokens are per protector


def test_what_is_held_is_bounded_by_count_and_bytes() -> None:
    p = DataProtector(Fernet.generate_key())
    p.recent_max_items = 3
    tokens = [p.encrypt(bytes([i]) * 10) for i in range(5)]
    assert list(p._recent) == tokens[2:]  # oldest out first
    assert all(p.decrypt(t) == bytes([i]) * 10 for i, t in enumerate(tokens))  # evicted ones still decrypt
    p.recent_max_items, p.recent_max_bytes = 100, 1000
    for _ in range(20):
        p.encrypt(b"x" * 200)
    assert p._recent_bytes <= 1000 and sum(len(k) + len(v) for k, v in p._recent.items()) == p._recent_bytes
