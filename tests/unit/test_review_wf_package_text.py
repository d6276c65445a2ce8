"""A package line's service type is a label for statements: control
characters are refused naming the field (outside review: a NUL was accepted,
which PostgreSQL text cannot hold, and a tab or line break reached the CSV)."""

from __future__ import annotations

from hub.clients import add_client
from tests.unit.test_money_moves_api import BUCKS, QU9, _grant_funding
from tests.unit.test_packages_api import _person, start


async def test_a_service_type_with_a_control_character_is_refused_naming_it(app_hub):
    _, key = await add_client(app_hub.hub.engine, "Bucks finance", BUCKS, "council",
                              ["packages:write", "register:write", "s117:read"])
    _grant_funding(app_hub, BUCKS, QU9)
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": key}
    for n, text in enumerate(("care\u0000home", "care\r\nhome", "\t=1+1", "care\u007fhome")):
        r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, f"ctl-{n}", f"CTL{n}", service_type=text))
        assert r.status_code == 422, (text, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["service_type"]
        assert text not in r.text  # the reason, never the value
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "ctl-ok", "OK", service_type="Café – 1:1 support"))
    assert r.status_code == 201, r.text
