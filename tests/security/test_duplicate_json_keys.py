"""A JSON body naming a key twice in one object is refused (422 naming the key's JSON path and "duplicate
key", never a value), not read as the value the parser kept last. Before, `"change_type": "detained"` then
`"change_type": "left-hospital"` was recorded (202) as left-hospital; a package event or split decision with a
key twice, or an NDJSON snapshot line, was read with its last value likewise."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from hub.codec import DUPLICATE_KEY
from hub.store.schema import quarantine, register_changes
from tests.support import detention

NHS = "9990000018"


async def count(hub, table) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


def with_key_twice(change: dict, key: str, first: object, nested: str | None = None) -> bytes:
    """`change` as JSON, `key` written first with `first`, then with its own value (which orjson keeps)."""
    text = orjson.dumps(change).decode()
    target = f'"{key}":{orjson.dumps((change[nested] if nested else change)[key]).decode()}'
    assert text.count(target) == 1
    return text.replace(target, f'"{key}":{orjson.dumps(first).decode()},{target}').encode()


async def test_register_change_with_change_type_twice_is_refused_and_quarantined(app_hub) -> None:  # noqa: ANN001
    headers = {"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/json"}
    detained, left = detention(NHS, "dup")
    assert (await app_hub.http.post("/v1/register-changes", headers=headers, json=detained)).status_code == 202
    body = with_key_twice(left, "change_type", "detained")
    r = await app_hub.http.post("/v1/register-changes", headers=headers, content=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [{"field": "change_type", "reason": DUPLICATE_KEY}]
    assert "detained" not in r.text and "left-hospital" not in r.text  # no value quoted
    assert await count(app_hub.hub, register_changes) == 1  # only the detention
    held = await app_hub.http.get(f"/v1/quarantine/{r.json()['quarantine_id']}", headers=headers)
    assert held.status_code == 200 and held.json()["raw"] == body.decode()
    assert held.json()["errors"] == [{"field": "change_type", "reason": DUPLICATE_KEY}]
    # The same change with the key once is taken.
    assert (await app_hub.http.post("/v1/register-changes", headers=headers, json=left)).status_code == 202


async def test_a_nested_key_and_an_unknown_key_twice_are_named_the_unknown_not_stored(app_hub) -> None:  # noqa: ANN001
    headers = {"X-API-Key": app_hub.keys["trust"]}
    detained, _ = detention(NHS, "dup2")
    body = with_key_twice(detained, "nhs_number", "9990001006", nested="person")
    body = body.replace(b'"source_system"', b'"Smith":1,"Smith":2,"source_system"', 1)
    r = await app_hub.http.post("/v1/register-changes", headers=headers, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "Smith", "reason": DUPLICATE_KEY},
                                  {"field": "person.nhs_number", "reason": DUPLICATE_KEY}]
    held = await app_hub.http.get(f"/v1/quarantine/{r.json()['quarantine_id']}", headers=headers)
    assert [e["field"] for e in held.json()["errors"]] == ["(unknown key)", "person.nhs_number"]
    assert await count(app_hub.hub, register_changes) == 0


async def test_strings_holding_quotes_and_colons_are_not_duplicates(app_hub) -> None:  # noqa: ANN001
    """The quick count sees more keys than there are; the exact read finds none: taken."""
    detained, _ = detention(NHS, "dup3")
    body = orjson.dumps(detained).replace(b'"RiO"', b'"Ri\\":O\\" :"', 1)
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, content=body)
    assert r.status_code == 202, r.text


from tests.unit.test_packages_api import _person, bucks, start  # noqa: E402, F401 - the packages tests' person and key


async def test_package_event_with_a_key_twice_is_refused_and_quarantined(app_hub, bucks) -> None:  # noqa: ANN001, F811
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": bucks}
    event = start(pid, "pk-dup", "LD")
    body = with_key_twice(event, "weekly_cost_pence", 7_000_000)
    r = await app_hub.http.post("/v1/packages", headers=h, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "weekly_cost_pence", "reason": DUPLICATE_KEY}]
    assert "7000000" not in r.text
    held = await app_hub.http.get(f"/v1/quarantine/{r.json()['quarantine_id']}", headers=h)
    assert held.status_code == 200
    assert (await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-ok", "LD"))).status_code == 201


async def test_split_decision_with_a_key_twice_is_refused_and_quarantined(app_hub, bucks) -> None:  # noqa: ANN001, F811
    pid, _ = await _person(app_hub)
    body = {"person_id": pid, "kind": "exception", "council_share_percent": "20", "effective_from": "2026-10-11",
            "reference": "panel 2026-10-09"}
    r = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": bucks},
                                content=with_key_twice(body, "council_share_percent", "80"))
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "council_share_percent", "reason": DUPLICATE_KEY}]
    assert "quarantine_id" in r.json()


async def test_an_ndjson_snapshot_line_with_a_key_twice_is_a_row_problem(app_hub) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    body = (b'{"nhs_number":"' + NHS.encode() + b'","entitled":true}\n'
            b'{"nhs_number":"9990001006","entitled":false,"entitled":true}\n')
    r = await app_hub.http.post("/v1/reconciliations", content=body,
                                headers={"X-API-Key": key, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    snap = r.json()
    assert (snap["rows_read"], snap["rows_rejected"]) == (2, 1)
    assert {"field": "row 2, field entitled", "reason": DUPLICATE_KEY} in snap["problems"]


async def test_a_json_array_snapshot_element_with_a_key_twice_is_a_row_problem(app_hub) -> None:  # noqa: ANN001
    """The JSON array form is read by events (bounded memory, adapters/snapshots): its builder kept the
    last value of a key named twice, at any depth, as the NDJSON parser did."""
    key = app_hub.keys["E06000060"]
    body = (b'[{"nhs_number":"' + NHS.encode() + b'","entitled":true},'
            b'{"nhs_number":"9990001006","entitled":false,"entitled":true},'
            b'{"nhs_number":"9990001006","entitled":true,"x":{"y":[1,{"z":1,"z":2}]}}]')
    r = await app_hub.http.post("/v1/reconciliations", content=body,
                                headers={"X-API-Key": key, "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    snap = r.json()
    assert (snap["rows_read"], snap["rows_rejected"]) == (3, 2)
    assert {"field": "row 2, field entitled", "reason": DUPLICATE_KEY} in snap["problems"]
    assert {"field": "row 3, field x.y[1].z", "reason": DUPLICATE_KEY} in snap["problems"]
