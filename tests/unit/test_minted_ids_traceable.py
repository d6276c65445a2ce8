"""The ids the hub mints (hub/ids.py `uuid4`, `uuid7`: change, person, quarantine, file, export,
subscription ids and correlation ids; an API dispute's id) never hold a run of exactly ten digits,
the log redactor's NHS number: before, about 1 in 60 was masked in every log line that named it
(`change_id=...-[nhs-number]e3`) and could no longer be traced."""

from __future__ import annotations

import re

from hub.domain.workflows.model import new_api_dispute_id
from hub.ids import uuid4, uuid7
from hub.observability.logging import allowlist_redactor

BARE_TEN = re.compile(r"(?<!\d)\d{10}(?!\d)")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-([0-9a-f]{4})-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_minted_ids_hold_no_nhs_number_shaped_run_and_log_as_they_are():
    for mint, version in ((uuid4, "4"), (uuid7, "7")):
        ids = [mint() for _ in range(20_000)]  # about 330 would hold one without the redraw
        assert not [i for i in ids if BARE_TEN.search(i)]
        assert all((m := UUID.fullmatch(i)) and m.group(1)[0] == version for i in ids)
        assert len(set(ids)) == len(ids)
        line = allowlist_redactor(None, "info", {"event": "register change accepted", "change_id": ids[0]})
        assert line["change_id"] == ids[0]
    disputes = [new_api_dispute_id() for _ in range(20_000)]
    assert not [d for d in disputes if BARE_TEN.search(d)]
    assert all(re.fullmatch(r"DSP-[0-9a-f]{12}", d) for d in disputes)


def test_uuid7_stays_time_ordered():
    ids = [uuid7() for _ in range(2_000)]
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the milliseconds, never going back
