"""A council file in the character set its Content-Type declares (`text/csv; charset=windows-1252`):
SWIFT and older case systems export in windows-1252 or ISO-8859-1, and a name such as Zoë or Siân
comes as one byte. Read as declared and kept as UTF-8; a charset the hub does not take is a 415 naming
Content-Type; a byte the declared set does not define refuses the file naming its line. Before, the
charset was ignored and every such file refused as "not UTF-8"."""

from __future__ import annotations

from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import persons, register_changes
from tests.unit.test_council_files_review30 import HDR
from tests.unit.test_workflows_api import drain

ROW = "CS-1,REVIEW_REQ,01/07/2025,,9991100016,Testpatient,Zoë,14/03/1971,HP20 1AA,,,,café £5"


async def _key(app_hub) -> str:  # noqa: ANN001
    """The council case system's key (one per hub)."""
    if "bucks-swift" not in app_hub.keys:
        app_hub.keys["bucks-swift"] = (await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council",
                                                        ["register:write"]))[1]
    return app_hub.keys["bucks-swift"]


async def _post(app_hub, data: bytes, content_type: str):  # noqa: ANN001, ANN202
    key = await _key(app_hub)
    return await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                   headers={"X-API-Key": key, "Content-Type": content_type})


async def test_a_windows_1252_file_declared_so_is_read_as_it_says(app_hub):  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO (demo)", "source_message_id": "cs-det", "change_type": "detained",
        "effective_date": "2025-01-06", "legal_status_code": "03", "hospital_ods": "RNU",
        "gp_practice_ods": "K81002", "residence_la_gss": "E06000060", "person": {"nhs_number": "9991100016"}})
    assert r.status_code == 202, r.text
    await drain(app_hub)
    data = (HDR + "\r\n" + ROW + "\r\n").encode("cp1252")
    assert b"Zo\xeb" in data and b"\xa35" in data
    r = await _post(app_hub, data, "text/csv; charset=windows-1252")
    assert r.status_code == 202, r.text
    report = await _processed(app_hub, r.json()["file_id"])
    assert (report["accepted"], report["rejected"]) == (1, 0), report
    async with app_hub.hub.engine.connect() as conn:
        (canonical,) = (await conn.execute(select(register_changes.c.canonical)
                                           .where(register_changes.c.source_message_id == "CS-1"))).one()
    assert canonical["review_reason"] == "café £5"
    # The same bytes declared UTF-8 (or not declared): refused as before, nothing recorded.
    r = await _post(app_hub, data, "text/csv")
    assert r.status_code == 422 and "UTF-8" in r.text, r.text


async def _processed(app_hub, file_id: str) -> dict:  # noqa: ANN001
    import asyncio

    key = await _key(app_hub)
    for _ in range(100):
        body = (await app_hub.http.get(f"/v1/council-files/{file_id}", headers={"X-API-Key": key})).json()
        if body.get("status") != "processing":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(body)


async def test_an_undeclared_byte_and_an_unknown_charset_are_refused_by_name(app_hub):  # noqa: ANN001
    data = (HDR + "\n" + ROW + "\n").encode("cp1252") + b"CS-2,\x81\n"
    r = await _post(app_hub, data, "text/csv; charset=windows-1252")
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "(file)", "reason": "line 3: a byte windows-1252 does not define"}]
    r = await _post(app_hub, (HDR + "\n" + ROW + "\n").encode("utf-16"), "text/csv; charset=utf-16")
    assert r.status_code == 415, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["Content-Type"]
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(persons.c.person_id))).all() == []
