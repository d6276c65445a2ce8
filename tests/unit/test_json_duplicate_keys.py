"""hub/codec.py `duplicate_keys`: where a JSON text names a key twice in one object, shared by every JSON entry
point (REST register changes, packages, split decisions, the limits middleware for the rest, NDJSON snapshot
lines, FHIR inbound). The quick path (a count of keys written against the keys parsed) must never hide one."""

from __future__ import annotations

import random

import orjson
import pytest

from hub.codec import duplicate_keys, json_path, may_repeat_key


@pytest.mark.parametrize("body, paths", [
    (b'{"change_type":"detained","change_type":"left-hospital"}', [("change_type",)]),
    (b'{"a":1,"person":{"nhs_number":"1","x":2,"nhs_number":"2"}}', [("person", "nhs_number")]),
    (b'{"a":[{"b":1},{"b":1 , "b" :\n2}]}', [("a", 1, "b")]),
    (b'[{"k":1,"k":1}]', [(0, "k")]),
    (b'{"a":1,"b":2,"a":3,"b":4,"a":5}', [("a",), ("b",)]),
    (b'{"a":{"x":1},"a":{"y":2}}', [("a",)]),
])
def test_each_key_named_twice_is_found_at_its_path(body: bytes, paths: list) -> None:
    assert duplicate_keys(body) == paths
    assert duplicate_keys(body, orjson.loads(body)) == paths  # the quick path agrees
    assert duplicate_keys(body.decode(), orjson.loads(body)) == paths


@pytest.mark.parametrize("body", [
    b'{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}',  # the same key in different objects
    b'{"note":"he said \\": here\\":","x":"\\"  :"}',  # a string holding \" then a colon
    b'[]', b'"x"', b'1', b'{}',
])
def test_no_key_named_twice_is_none(body: bytes) -> None:
    assert duplicate_keys(body) == []
    assert duplicate_keys(body, orjson.loads(body)) == []


def test_the_quick_count_never_says_no_when_a_key_repeats() -> None:
    """Random objects, strings with quotes and colons, whitespace around colons; a key repeated or not."""
    rng = random.Random(117)
    alphabet = ['a', 'b', '"', ':', ' ', '\\', '{', '}', ',']

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))

    def obj(depth: int) -> str:
        keys = [text() for _ in range(rng.randint(0, 4))]
        if keys and rng.random() < 0.3:
            keys.append(rng.choice(keys))
        parts = []
        for k in keys:
            value = obj(depth + 1) if depth < 3 and rng.random() < 0.3 else orjson.dumps(text()).decode()
            parts.append(orjson.dumps(k).decode() + rng.choice(["", " ", "\n\t"]) + ":" + rng.choice(["", " "]) + value)
        return "{" + ",".join(parts) + "}"

    repeated = 0
    for _ in range(3000):
        body = obj(0).encode()
        slow = duplicate_keys(body)
        assert duplicate_keys(body, orjson.loads(body)) == slow
        if slow:
            repeated += 1
            assert may_repeat_key(body, orjson.loads(body))
    assert repeated > 300


def test_paths_are_written_as_json_paths() -> None:
    assert json_path(("person", "nhs_number")) == "person.nhs_number"
    assert json_path(("entry", 1, "resource", "id"), "Bundle") == "Bundle.entry[1].resource.id"
    assert json_path((0, "k")) == "[0].k"
    assert json_path(()) == "(body)"
