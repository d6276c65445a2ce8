"""Review (council files out), reproduced on a running hub: `GET
/v1/exports/{id}` streams a register extract (every person the council is
responsible for, each with an NHS number) with no `Cache-Control`, so a
cache on the way (a council's proxy, the browser) was free to keep it, unlike
the replay and feed answers (`no-store`). Now `no-store`, and `nosniff` so a
browser never takes the CSV for a page."""

from __future__ import annotations

from pathlib import Path

from hub.exports import ExportService
from tests.support import detention

COUNCIL = "E06000060"


async def test_an_extract_download_is_not_stored_by_caches(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    for change in detention("9991100016", "x"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    while await app_hub.hub.dispatcher.run_once():
        pass
    h = app_hub.hub
    h.exports = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.post("/v1/exports", headers=key, json={"layout": "swift_csv"})
    assert r.status_code == 202, r.text
    await h.exports.build_waiting()

    r = await app_hub.http.get(f"/v1/exports/{r.json()['export_id']}", headers=key)
    assert r.status_code == 200
    assert b"9991100016" in r.content  # what is at stake
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
