"""A client's X-Correlation-Id is kept only if it is opaque (hub/api/correlation.py):
a UUID (none of whose groups is a bare run of ten digits), a ULID, or a token
of 8-64 characters of `[A-Za-z0-9._:-]` that, its separators removed, has no
run of 10 digits (an NHS number) nor 8 that read as a date from 1900 to 2099
(a date of birth), and no run of 3 letters with any outside a-f (a word, a
name; hex ids pass).

Before: only a run of ten digits was refused, so `999.100.0011`,
`999-100-0011` (an NHS number with separators) and `Zebedee-1970-05-05` (a
name and a date of birth) were logged, stored with the change or the
quarantined input, forwarded to subscribers and echoed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from hub.api.correlation import accepted_correlation_id
from hub.store.schema import quarantine, register_changes
from tests.support import detention

NHS = "9991100016"  # synthetic, the 999 test range

REFUSED = [
    "999.100.0011", "999-100-0011", "999_100_0011", "999:100:0011",  # an NHS number, spaced
    "Zebedee-1970-05-05",  # a name and a date of birth
    "19700505", "ref-1970.05.05",  # a date of birth
    "Jane-Doe", "Alice.ab12", "Zebedee", "SMITH0001", "trust-engine.42_a", "corr-bad",  # words and names
    "MSG00001", "MSG-00001",  # an HL7-style counter behind a word: refused (see the module's docstring)
    "01arz3ndektsv4rrffq69g5fav",  # a ULID, but not as the spec writes it (upper case)
    "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters: not a ULID, and words by the letter rule
    "0119700505ABCDEFGHJKMNPQRS",  # ULID-shaped, with a date of birth in it
    "abc1234", "c-1", "",  # shorter than 8
    "a" * 65, "a b c d e f", "café-1234", "id;drop", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
    "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "ab-05051970", "ab-20011231-cd",  # a date of birth, day first or year first
    "6ba7b810-9dad-11d1-80b4-a9991000011b",  # a UUID whose last group holds an NHS number
]
ACCEPTED = [
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",  # a version 1 UUID
    "f47ac10b-58cc-4372-a567-0e02b2c3d479",  # version 4
    "017f22e2-79b0-7cc3-98c4-dc0c0c07398f",  # version 7
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # a ULID
    "4bf92f3577b34da6a3ce929d0e0e4736",  # a W3C trace id (hex)
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a whole traceparent
    "deadbeef", "a1b2c3d4:e5f6", "1234567-abcdef", "A" * 64,
    "6ba7b8109dad11d180b400c04fd430c8----",  # not a UUID's 8-4-4-4-12 but a hex token: kept as sent
    "4bf92fa12345678bf9a3ce",  # eight digits that are no date (1234-56-78, 12-34-5678): a random hex id's
]


@pytest.mark.parametrize("value", REFUSED)
def test_ids_that_are_not_opaque_are_refused(value: str) -> None:
    assert accepted_correlation_id(value) is None
    assert accepted_correlation_id(value.encode("utf-8")) is None


@pytest.mark.parametrize("value", ACCEPTED)
def test_uuids_ulids_and_hex_machine_ids_are_kept(value: str) -> None:
    assert accepted_correlation_id(value) == value
    assert accepted_correlation_id(value.encode()) == value


def test_a_uuid_is_kept_in_any_case_as_its_canonical_lower_case_form() -> None:
    value = "52a04e0d-4fa5-4186-9e5f-54a5651b629e"  # (a random one holds a bare ten-digit group 1 time in 60)
    assert accepted_correlation_id(value.upper()) == value
    assert accepted_correlation_id(f"  {value}  ") == value


@pytest.mark.parametrize("value", ["999.100.0011", "999-100-0011", "Zebedee-1970-05-05", "MSG00001"])
async def test_a_refused_id_is_never_logged_stored_or_answered(app_hub, capsys, value: str) -> None:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    accepted, held = detention(NHS, "cid")[0], {**detention(NHS, "cid-bad")[0], "legal_status_code": "XX"}
    answers = []
    for change, status in ((accepted, 202), (held, 422)):
        r = await app_hub.http.post("/v1/register-changes", json=change,
                                    headers={**trust, "X-Correlation-Id": value, "x-correlation-id": "trace-0001"})
        assert r.status_code == status, r.text
        minted = r.headers["x-correlation-id"]
        assert uuid.UUID(minted) and minted != value  # the first header decides: a new id, not the second
        assert value not in r.text and value not in str(r.headers)
        answers.append(minted)
    assert answers[0] == (await _stored(app_hub))[0] and answers[1] == (await _stored(app_hub))[1]
    logs = capsys.readouterr().err
    assert all(minted in logs for minted in answers)
    assert value not in logs and "Zebedee" not in logs


async def _stored(app_hub) -> tuple[str, str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        [change] = (await conn.execute(select(register_changes.c.correlation_id))).scalars().all()
        [held] = (await conn.execute(select(quarantine.c.correlation_id))).scalars().all()
    return change, held


@pytest.mark.parametrize("value", ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "4bf92f3577b34da6a3ce929d0e0e4736"])
async def test_an_opaque_id_is_used_throughout(app_hub, capsys, value: str) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", json=detention(NHS, "ok")[0],
                                headers={"X-API-Key": app_hub.keys["trust"], "X-Correlation-Id": value})
    assert r.status_code == 202, r.text
    assert r.headers["x-correlation-id"] == value == r.json()["correlation_id"]
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(register_changes.c.correlation_id))).scalars().all() == [value]
    assert value in capsys.readouterr().err
