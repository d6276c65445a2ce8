"""DataProtector: personal data at rest under AES-256-GCM, and what the
hub wrote before with Fernet still read under the same data key."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from hub.crypto import DataProtector

DETAILS = b'{"nhs_number":"9991100016","given_name":"Alex","family_name":"Testpatient"}'


def test_a_sealed_field_reads_back_under_the_same_key_only() -> None:
    key = Fernet.generate_key()
    here, elsewhere = DataProtector(key), DataProtector(key)  # two processes, one data key file
    token = here.encrypt(DETAILS)
    assert b"9991100016" not in token and b"Testpatient" not in token
    assert here.encrypt(DETAILS) != token  # a fresh nonce each time
    assert elsewhere.decrypt(token) == DETAILS
    with pytest.raises(ValueError, match="cannot be decrypted with the configured data key") as caught:
        DataProtector(Fernet.generate_key()).decrypt(token)
    assert "9991100016" not in str(caught.value)


@pytest.mark.parametrize("spoil", [
    lambda t: t[:-1] + bytes([t[-1] ^ 1]),  # the tag
    lambda t: t[:20] + bytes([t[20] ^ 1]) + t[21:],  # the ciphertext
    lambda t: t[:5] + bytes([t[5] ^ 1]) + t[6:],  # the nonce
    lambda t: t[:12],  # cut short
    lambda t: b"",
    lambda t: b"\x01",
])
def test_an_altered_or_cut_token_is_refused(spoil) -> None:  # noqa: ANN001
    p = DataProtector(Fernet.generate_key())
    with pytest.raises(ValueError, match="cannot be decrypted"):
        p.decrypt(spoil(p.encrypt(DETAILS)))


def test_tokens_written_before_aes_gcm_still_read() -> None:
    """Rows written by a hub before this version hold Fernet tokens (bytes
    columns) and, for a workflow case's reason, Fernet text in JSON."""
    key = Fernet.generate_key()
    old = Fernet(key)
    p = DataProtector(key)
    assert p.decrypt(old.encrypt(DETAILS)) == DETAILS
    assert p.decrypt_text(old.encrypt("the placement is in our area".encode()).decode()) == \
        "the placement is in our area"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        DataProtector(Fernet.generate_key()).decrypt(old.encrypt(DETAILS))


def test_text_tokens_for_values_kept_in_json() -> None:
    p = DataProtector(Fernet.generate_key())
    token = p.encrypt_text("Rejected: ordinarily resident in Worcestershire, see the care plan")
    assert token.isascii() and "Worcestershire" not in token
    assert p.decrypt_text(token) == "Rejected: ordinarily resident in Worcestershire, see the care plan"
    for bad in ["not base64 at all!", base64.b64encode(b"\x01" + b"0" * 40).decode(), ""]:
        with pytest.raises(ValueError, match="cannot be decrypted"):
            p.decrypt_text(bad)
