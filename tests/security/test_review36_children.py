"""Review 36: the children's notices go to the council holding the duty on the day a notice falls due.

A detention may name a council by a code whose council was abolished in a reorganisation (a PAS still
sending Buckinghamshire County Council's E10000002 after 1 April 2020, or the county codes the 2026-2028
reorganisations will retire): the hub accepts it (a former social services authority's code) and every
other message names the council in place (hub/domain/rules/engine.py `_council_org`, hazard H-03). The
s85 notice and the EHC plan notice were addressed to the abolished council as sent: refused by its
agreement (or no subscription) and so never told to the council responsible for the child (hazard H-15).
Real HL7 v2 over MLLP's handler, the real scanner, the shipped reference data and sample agreements."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.children import ChildNoticeScanner
from hub.domain.dates import england_day
from hub.mllp import MllpServer
from hub.store.schema import disclosures

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7"
BUCKS, OLD_BUCKS = "E06000060", "E10000002"  # Buckinghamshire; the county council it replaced on 2020-04-01
TODAY = england_day()
LONG_STAY, EHC = "s117-child-long-stay-notice", "s117-child-ehc-plan-notice"


def child_a01(control_id: str, residence: str, ehc_council: str) -> bytes:
    """The fixture A01 (s3) of a 14-year-old admitted 3 days ago, expected to stay 90 days (PV2-10), living in
    `residence` (PID-11.9), with an EHC plan maintained by `ehc_council` (ZU5-9)."""
    text = FIXTURE.read_bytes().decode()
    text = text.replace("RNU-A01-0001", control_id)
    text = text.replace("^^E06000060|", f"^^{residence}|")
    zu5 = next(s for s in text.split("\r") if s.startswith("ZU5|"))
    text = text.replace(zu5, "PV2" + "|" * 10 + "90\r" + zu5 + "|||" + ehc_council)
    admitted, born = TODAY - timedelta(days=3), TODAY.replace(year=TODAY.year - 14)
    return text.replace("20250106", admitted.strftime("%Y%m%d")).replace("19800214", born.strftime("%Y%m%d")).encode()


@pytest.fixture
async def mllp(app_hub):  # noqa: ANN001, ANN201
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    yield server
    server._sock.close()


async def decided(app_hub) -> list[tuple[str, str, str]]:  # noqa: ANN001
    hub = app_hub.hub
    scanner = ChildNoticeScanner(hub.engine, hub.ref, hub.sharing, hub.protector, hub.settings.hub_endpoint,
                                 hub.settings.namespaces())
    await scanner.run_once()
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(disclosures.c.event_type, disclosures.c.recipient_org,
                                          disclosures.c.decision)
                                   .where(disclosures.c.event_type.like("s117-child-%")))).all()
    return sorted(tuple(r) for r in rows)


async def test_a_childs_notices_naming_an_abolished_council_go_to_the_council_that_replaced_it(app_hub, mllp):
    assert app_hub.hub.ref.council(OLD_BUCKS, TODAY).code == BUCKS  # the shipped register's succession
    ack = await mllp.handle(child_a01("A01-old-code", OLD_BUCKS, OLD_BUCKS))
    assert "|AA|A01-old-code" in ack, ack
    told = await decided(app_hub)
    assert [(t, org) for t, org, _ in told] == [(EHC, BUCKS), (LONG_STAY, BUCKS)], told
    assert OLD_BUCKS not in {org for _, org, _ in told}


async def test_a_current_councils_code_is_told_as_sent(app_hub, mllp):
    ack = await mllp.handle(child_a01("A01-new-code", BUCKS, "E10000025"))
    assert "|AA|A01-new-code" in ack, ack
    assert [(t, org) for t, org, _ in await decided(app_hub)] == [(EHC, "E10000025"), (LONG_STAY, BUCKS)]


@pytest.mark.parametrize(("admitted", "due", "council"), [
    ("2020-01-15", "2020-04-08", BUCKS),  # the 84th day after the county's abolition (2020-04-01): its successor
    ("2019-12-01", "2020-02-23", OLD_BUCKS),  # before it: the county council, as it then was
])
def test_the_s85_notice_names_the_council_in_place_on_the_day_it_falls_due(app_hub, admitted, due, council):
    from hub.domain.children import Basis, candidate_notices
    from tests.unit.domain.builders import d, detained

    stay = [detained(admitted, "02", hospital_ods="RNU", residence_la_gss=OLD_BUCKS)]
    [notice] = candidate_notices(stay, d(due), app_hub.hub.ref)
    assert (notice.org_code, notice.basis, notice.due_on) == (council, Basis.ORDINARY_RESIDENCE, d(due))


@pytest.mark.parametrize(("admitted", "weeks"), [
    ("2020-05-04", 20),  # the EHC and expected-long-stay notices due at admission, after the abolition
    ("2020-03-02", None),  # the EHC notice at admission, before it; the s85 notice on day 84, after it
])
def test_notices_told_to_the_council_that_replaced_the_one_named_stand_and_its_leaving_is_told_to_it(
        app_hub, admitted, weeks):
    """A notice went to the council in place on its due day (the successor of the code the detention named):
    that council is the one concerned, not displaced by the code as sent. Before the fix the stay's end
    withdrew its notices (`another-council-concerned`) and told it no leaving notice."""
    from hub.domain.children import Told, candidate_notices, corrections, leaving_notices, withdrawals
    from hub.domain.model import EventType
    from tests.unit.domain.builders import d, detained, left

    ref = app_hub.hub.ref
    stay = detained(admitted, "03", hospital_ods="RNU", residence_la_gss=OLD_BUCKS, ehc_plan_la_gss=OLD_BUCKS,
                    expected_stay_weeks=weeks)
    due = d(admitted) + timedelta(days=84 if weeks is None else 0)
    sent = candidate_notices([stay], due, ref)
    assert [n.org_code for n in sent] == ([BUCKS, BUCKS] if weeks else [OLD_BUCKS, BUCKS]), sent
    told = [Told(f"e{i}", n.event_type, n.org_code, stay.change_id) for i, n in enumerate(sent)]
    history = [stay, left("2020-06-30")]
    assert withdrawals(history, told, {}, ref) == []
    assert corrections(history, told, {}, ref) == []
    [leaving] = leaving_notices(history, told, d("2020-07-01"), ref)
    assert (leaving.event_type, leaving.org_code) == (EventType.CHILD_LEFT_HOSPITAL_NOTICE, sent[-1].org_code)


CUMBRIA, CUMBERLAND, OXFORDSHIRE = "E10000006", "E06000063", "E10000025"  # RNU (Oxford Health): Oxfordshire


def test_a_childs_notice_in_a_council_area_split_since_goes_to_the_coordinating_council_then_the_successor(app_hub):
    """Review 36b (H-03, H-15): a child from Cumbria detained before its split (2023-04-01), still in hospital on
    the 84th day after it. The s85 notice went to Cumbria's code, abolished, answered by no one; a register
    change naming the successor changed nothing. Now: the hospital's council, coordinating, is told (basis
    coordinating-council), and once a `moved` change names Cumberland its notice is withdrawn
    (another-council-concerned) and Cumberland told; a successor not of the split, or none, changes nothing."""
    from hub.domain.children import (
        Basis,
        NoticeReason,
        Told,
        candidate_notices,
        corrections,
        leaving_notices,
        unsent,
        withdrawals,
    )
    from hub.domain.model import EventType
    from tests.unit.domain.builders import d, detained, left, moved

    ref = app_hub.hub.ref
    stay = detained("2023-02-01", "03", hospital_ods="RNU", residence_la_gss=CUMBRIA)
    [first] = candidate_notices([stay], d("2023-04-26"), ref)
    assert (first.org_code, first.basis, first.due_on) == (OXFORDSHIRE, Basis.COORDINATING, d("2023-04-26"))
    told = [Told("e-oxon", EventType.CHILD_LONG_STAY_NOTICE, OXFORDSHIRE, stay.change_id)]
    # A successor not of the split: nothing changes (the rules note it), no withdrawal.
    wrong = [stay, moved("2023-05-02", None, residence_before_detention_la_gss="E06000060")]
    assert withdrawals(wrong, told, {}, ref) == [] and corrections(wrong, told, {}, ref) == []
    assert unsent(candidate_notices(wrong, d("2023-05-03"), ref), wrong, told, {}) == []
    # Cumberland named: Oxfordshire's notice withdrawn, Cumberland told (once), its leaving notice Cumberland's.
    named = [stay, moved("2023-05-02", None, residence_before_detention_la_gss=CUMBERLAND)]
    [withdrawal] = withdrawals(named, told, {}, ref)
    assert (withdrawal.org_code, withdrawal.reason, withdrawal.withdraws) == (
        OXFORDSHIRE, NoticeReason.ANOTHER_COUNCIL, "e-oxon")
    [anew] = unsent(candidate_notices(named, d("2023-05-03"), ref), named, told, {})
    assert (anew.org_code, anew.basis) == (CUMBERLAND, Basis.ORDINARY_RESIDENCE)
    told += [Told("e-gone", EventType.CHILD_NOTICE_WITHDRAWN, OXFORDSHIRE, stay.change_id, withdraws="e-oxon"),
             Told("e-cumb", EventType.CHILD_LONG_STAY_NOTICE, CUMBERLAND, stay.change_id)]
    assert withdrawals(named, told, {}, ref) == []
    assert unsent(candidate_notices(named, d("2023-05-04"), ref), named, told, {}) == []
    [leaving] = leaving_notices([*named, left("2023-06-30")], told, d("2023-07-01"), ref)
    assert (leaving.event_type, leaving.org_code) == (EventType.CHILD_LEFT_HOSPITAL_NOTICE, CUMBERLAND)
