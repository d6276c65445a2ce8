"""A body newly placed by a change hears it once, by the event that names it,
however the dispatcher's batches fall (hub/delivery/dispatcher.py
`_routed_later`, the `later_events` header ingest puts on each event).

A move of someone entitled publishes `s117-register-change-recorded`, then
`s117-moved-out-of-area` (routed to the new host council), then a review. The
recorded event found the host council's position changed and sent it a
moved-out-of-area of its own, then the routed one came: two event ids for one
fact. Checked with every message its own batch (the change's events apart),
with the whole history dispatched as one backlog (the e2e walking skeleton's
hub lingering over the posts), and with backlogs in batches of two and three,
which part an older change's message from the move's. The truth is the whole
history's, so an older change's message finds the move; it leaves the bodies'
new positions to the messages of the changes received after its own."""

from __future__ import annotations

import random
from datetime import date

import httpx
import yaml

from hub.api.app import create_app
from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from tests.conftest import test_settings as make_settings
from tests.e2e.conftest import SHARING

WORCS = "E10000034"


import pytest


@pytest.mark.parametrize("dispatch", ["each-alone", "backlog", "backlog-by-2", "backlog-by-3"])
async def test_the_new_host_council_hears_of_the_move_once(tmp_path, dispatch) -> None:  # noqa: ANN001
    agreements = tmp_path / "sharing.yaml"
    agreements.write_text(yaml.safe_dump(SHARING))  # Worcestershire: s117-moved-out-of-area only
    settings = make_settings(tmp_path)
    settings.sharing_agreements_path = agreements
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        trust = (await add_client(hub.engine, "Trust", "RNU", "trust", ["register:write"]))[1]
        worcs = (await add_client(hub.engine, "Worcs", WORCS, "council", ["subscriptions:write"]))[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": worcs}, json={"channel": "feed"})
            sub = r.json()["subscription_id"]
            for change in detention_to_move_scenario(random.Random(1), "once", date(2025, 1, 6)):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                assert r.status_code == 202
                while dispatch == "each-alone" and await hub.dispatcher.run_once(1):  # each message its own batch
                    pass
            size = int(dispatch.rsplit("-", 1)[1]) if dispatch.startswith("backlog-by-") else None
            while await (hub.dispatcher.run_once(size) if size else hub.dispatcher.run_once()):
                pass  # (backlog: the whole history in one batch, or in batches of `size` messages)
            items = (await http.get(f"/v1/feeds/{sub}", headers={"X-API-Key": worcs})).json()["items"]
    assert [i["event_type"] for i in items] == ["s117-moved-out-of-area"], [i["event_id"] for i in items]
