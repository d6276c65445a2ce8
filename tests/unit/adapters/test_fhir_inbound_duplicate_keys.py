"""A FHIR message whose JSON names a property twice in one object is refused at that property (422, issue
`invalid`), never read as whichever value the parser kept last: the sender's system may have meant the
first. Before, `"type": "collection", "type": "message"` was taken as a message Bundle, a Patient with two
`birthDate`s or an identifier with two `value`s was recorded with the last one, and `"code": "left-hospital",
"code": "detained"` in the MessageHeader's eventCoding recorded a detention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.fhir_inbound import map_message
from adapters.fhir_inbound.mapping import INVALID

FIXTURE = (Path(__file__).resolve().parents[2] / "fixtures" / "fhir_inbound" / "detained.json").read_text()
BODY = json.dumps(json.loads(FIXTURE), indent=1)  # one property a line, as the replacements below expect
REASON = "appears more than once in its JSON object: which value was meant cannot be told"


@pytest.mark.parametrize("old, new, location", [
    ('"type": "message"', '"type": "collection",\n "type": "message"', "Bundle.type"),
    ('"birthDate": "1980-05-17"', '"birthDate": "1980-05-17", "birthDate": "1981-05-17"',
     "Bundle.entry[1].resource.birthDate"),
    ('"value": "9990000018"', '"value": "9990001006", "value": "9990000018"',
     "Bundle.entry[1].resource.identifier[0].value"),
    ('"code": "detained"', '"code": "left-hospital", "code": "detained"',
     "Bundle.entry[0].resource.eventCoding.code"),
])
def test_a_property_named_twice_is_refused_at_its_location(old: str, new: str, location: str) -> None:
    assert old in BODY
    assert map_message(BODY.encode()).ok  # the message as it is maps
    result = map_message(BODY.replace(old, new, 1).encode())
    assert not result.ok and result.change is None
    assert [(p.location, p.reason, p.code) for p in result.problems] == [(location, REASON, INVALID)]


def test_every_property_named_twice_is_named_once_and_no_value_is_quoted() -> None:
    body = BODY.replace('"family": "TESTPATIENT"', '"family": "TESTPATIENT", "family": "OTHER", "family": "X"', 1)
    body = body.replace('"postalCode": "HP20 1AA"', '"postalCode": "HP20 1AA", "postalCode": "HP20 1AB"', 1)
    result = map_message(body.encode())
    assert [p.location for p in result.problems] == [
        "Bundle.entry[1].resource.name[0].family", "Bundle.entry[1].resource.address[0].postalCode"]
    text = repr(result.problems)
    assert "TESTPATIENT" not in text and "OTHER" not in text and "HP20" not in text


def test_the_same_key_in_different_objects_is_not_a_duplicate() -> None:
    result = map_message(BODY.encode())  # "system" and "value" appear in many objects, once in each
    assert result.ok, result.problems


def test_a_property_repeated_with_an_object_value_is_named_at_the_right_place() -> None:
    """The value dropped is an object with objects inside: the property is still named where it is."""
    body = BODY.replace('"source": {', '"source": {"name": "X", "endpoint": "https://x.example"}, "source": {', 1)
    body = body.replace('"birthDate": "1980-05-17"', '"birthDate": "1980-05-17", "birthDate": "1980-05-17"', 1)
    result = map_message(body.encode())
    assert [p.location for p in result.problems] == [
        "Bundle.entry[0].resource.source", "Bundle.entry[1].resource.birthDate"]
