"""`change_digest`: the idempotency digest over what a change means, not the
bytes sent. A resend of the same change with "999 200 1240" for "9992001240",
an explicit `"notified_on": null` (the default) or its keys in another order
got 409 "already used for a different register change": the hub compared the
raw payloads (hub/ingest/service.py `payload_sha256`, which is to use this)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.ingest.contract import RegisterChangeIn, change_digest
from tests.unit.contract_inputs import change


def digest(data: dict[str, Any]) -> str:
    return change_digest(RegisterChangeIn.model_validate(data))


BASE = change(person={"nhs_number": "9992001240", "family_name": "Testpatient"})


@pytest.mark.parametrize("same", [
    {**BASE, "person": {**BASE["person"], "nhs_number": "999 200 1240"}},
    {**BASE, "notified_on": None},
    {**BASE, "no_fixed_abode": False, "from_prison": False, "order_type": None, "schema_version": "1"},
    {**BASE, "person": {**BASE["person"], "given_name": None, "birth_date": None}},
    {**BASE, "legal_status_code": "3"},
    dict(reversed(list(BASE.items()))),
], ids=["spaced-nhs", "null-notified-on", "explicit-defaults", "null-person-fields", "unpadded-legal-status",
        "key-order"])
def test_the_same_change_written_otherwise_has_the_same_digest(same):
    assert digest(same) == digest(BASE)


@pytest.mark.parametrize("other", [
    {**BASE, "person": {**BASE["person"], "nhs_number": "9990001006"}},
    {**BASE, "notified_on": "2025-01-07"},
    {**BASE, "legal_status_code": "02"},
    {**BASE, "person": {**BASE["person"], "family_name": "Otherpatient"}},
    {**BASE, "from_prison": True},
    {**BASE, "source_message_id": "m-2"},
], ids=["nhs", "notified-on", "legal-status", "name", "from-prison", "message-id"])
def test_a_real_difference_has_another_digest(other):
    assert digest(other) != digest(BASE)
