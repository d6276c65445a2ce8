"""The dispatcher's own Python calls an event (hub/delivery/dispatcher.py and what it asks for every
event: hub/routing.py, hub/domain/views.py, hub/sharing.py, hub/fhir/message_json.py and
messages.py), counted as cProfile counts them (each call of a Python function or of a built-in that
their code makes), not timed. They are most of the dispatcher's work besides the rules engine's and
the store's (bench/JOURNAL.md, "Twenty-seventh session: the dispatcher's calls an event"): a call made
again for every recipient or event where a batch, a message or a table could have kept its answer
shows here."""

from __future__ import annotations

import random
import sys
from datetime import date
from types import FrameType
from typing import Any

import hub.delivery.dispatcher
import hub.domain.views
import hub.fhir.message_json
import hub.fhir.messages
import hub.routing
import hub.sharing
from hub.delivery.dispatcher import Dispatcher
from hub.sample_data import detention_to_move_scenario

OWN = frozenset(m.__file__ for m in (hub.delivery.dispatcher, hub.routing, hub.domain.views, hub.sharing,
                                     hub.fhir.message_json, hub.fhir.messages))


class _Calls:
    """The calls made by code in `OWN` (not those its callees elsewhere make), and of it the calls
    `handle` and `_send` make themselves, with how many times each ran."""

    def __init__(self) -> None:
        self.own = 0
        self.handle, self.send = Dispatcher.handle.__code__, Dispatcher._send.__code__
        self.made = {self.handle: 0, self.send: 0}
        self.runs = {self.handle: 0, self.send: 0}

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call":
            if frame.f_code in self.runs:  # a run (or a coroutine resumed: none here, the statements run inline)
                self.runs[frame.f_code] += 1
            caller = frame.f_back
        elif event == "c_call":
            caller = frame
        else:
            return
        if caller is not None and caller.f_code.co_filename in OWN:
            self.own += 1
            if caller.f_code in self.made:
                self.made[caller.f_code] += 1


async def test_an_event_takes_few_calls_of_the_dispatchers_own(app_hub) -> None:  # noqa: ANN001
    for key in ("E06000060", "E08000025"):
        r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[key]},
                                    json={"url": "http://127.0.0.1:9/hook", "secret": "x" * 32})
        assert r.status_code == 201, r.text
    rng = random.Random(27)
    for n in range(6):
        for c in detention_to_move_scenario(rng, f"calls-{n}", date(2025, 1, 6)):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
            assert r.status_code == 202, r.text
    d = app_hub.hub.dispatcher
    calls = _Calls()
    sys.setprofile(calls)
    try:
        handled = await d.run_once(100)
    finally:
        sys.setprofile(None)
    assert handled >= 20 and calls.runs[calls.handle] == handled
    sends = calls.runs[calls.send]
    assert sends >= handled
    per_event = calls.own / handled
    handle, send = calls.made[calls.handle] / handled, calls.made[calls.send] / sends
    print(f"{per_event:.1f} calls an event in the dispatcher's own code; handle {handle:.1f} an event, "
          f"_send {send:.1f} a recipient ({sends} for {handled} events)")
    # Before (bench/JOURNAL.md, "Twenty-seventh session"): 55.7 an event, 14.2 a recipient, 277.5 an event in
    # all (265.5 with the message rendered in fewer calls); then 43.0, 10.5, 229.3 (handle's and _send's own trimmed), 199.5 (routing, the views, the
    # position's parameters), 182.5 (the renderer's parts kept per base, the agreements' answers); now
    # about 37, 8.3 and 172.5 (what handle and _send hold read with `in` and `[]`).
    assert handle <= 40, "handle's own calls an event"
    assert send <= 9, "_send's own calls a recipient"
    assert per_event <= 180, "the dispatcher's own code's calls an event"


def test_a_legal_status_display_is_kept_per_code_for_one_reference_data() -> None:
    """The legal status's display a message names (`_legal_status_display`), looked up once a code
    for the reference data it was read from: other reference data (another object) are asked again."""
    from types import SimpleNamespace

    asked: list[tuple[str, str]] = []

    class Ref:
        def __init__(self, name: str) -> None:
            self.name = name

        def legal_status(self, code: str) -> Any:
            asked.append((self.name, code))
            return SimpleNamespace(description=f"{self.name} {code}") if code != "99" else None

    d = Dispatcher.__new__(Dispatcher)
    d._ref = Ref("first")
    status = SimpleNamespace(qualifying_section_code=None, entitling_section_code="03")
    change = SimpleNamespace(legal_status_code="02")
    assert d._legal_status_display(status, change) == "first 03"
    assert d._legal_status_display(status, change) == "first 03"
    unknown = SimpleNamespace(qualifying_section_code="99", entitling_section_code=None)
    assert d._legal_status_display(unknown, change) is None
    assert d._legal_status_display(unknown, change) is None
    none = SimpleNamespace(qualifying_section_code=None, entitling_section_code=None)
    assert d._legal_status_display(none, SimpleNamespace(legal_status_code=None)) is None
    assert asked == [("first", "03"), ("first", "99")]
    d._ref = Ref("second")
    assert d._legal_status_display(status, change) == "second 03"
    assert asked[-1] == ("second", "03")
