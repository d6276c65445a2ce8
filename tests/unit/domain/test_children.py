"""Children in hospital (hub/domain/children.py): the Children Act 1989 s85
notice to the council responsible for the child (Worcs 6.1) and the EHC plan
council told of the admission (Worcs 6.4)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from hub.domain.children import (
    Basis,
    NoticeReason,
    Told,
    candidate_notices,
    corrections,
    eighteenth_birthday,
    is_child_on,
    leaving_notices,
    notices_due,
    owed,
    stays,
    summary,
    unsent,
    withdrawals,
)
from hub.domain.model import ChangeType, EventType
from tests.unit.domain.builders import REF, change, d, detained, left
from tests.unit.domain.fakes import BIRMINGHAM, BUCKINGHAMSHIRE, OXFORD_HEALTH, OXFORDSHIRE, WORCESTERSHIRE

ADMITTED = "2025-03-03"
DAY_84 = d(ADMITTED) + timedelta(days=84)  # 12 weeks in hospital: 2025-05-26


def child_detained(on: str = ADMITTED, code: str = "02", **fields):
    fields.setdefault("hospital_ods", OXFORD_HEALTH)
    fields.setdefault("residence_la_gss", BUCKINGHAMSHIRE)
    return detained(on, code, **fields)


def born_years_before(day: date, years: int, days_more: int = 0) -> date:
    return day.replace(year=day.year - years) - timedelta(days=days_more)


def long_stay(notices):
    return [n for n in notices if n.event_type is EventType.CHILD_LONG_STAY_NOTICE]


# --- age --------------------------------------------------------------------------


def test_a_child_until_the_day_before_the_eighteenth_birthday():
    birth = d("2007-06-15")
    assert eighteenth_birthday(birth) == d("2025-06-15")
    assert is_child_on(birth, d("2025-06-14"))  # 17 years and 364 days
    assert not is_child_on(birth, d("2025-06-15"))  # the 18th birthday
    assert not is_child_on(None, d("2025-06-14"))  # no date of birth: not known to be a child


def test_born_on_29_february_turns_18_on_1_march_in_a_common_year():
    assert eighteenth_birthday(d("2008-02-29")) == d("2026-03-01")
    assert is_child_on(d("2008-02-29"), d("2026-02-28"))


def test_17_years_364_days_on_admission_day_is_told_at_admission_18th_birthday_is_not():
    history = [child_detained(expected_stay_weeks=16)]
    day = d(ADMITTED)
    # The day before the 18th birthday: 17 years and 364 days (2007-03-04 -> 18 on 2025-03-04).
    child = born_years_before(day, 18) + timedelta(days=1)
    assert eighteenth_birthday(child) == day + timedelta(days=1)
    notices = long_stay(notices_due(history, child, day, REF))
    assert [(n.reason, n.org_code, n.basis) for n in notices] == [
        (NoticeReason.EXPECTED_LONG_STAY, BUCKINGHAMSHIRE, Basis.ORDINARY_RESIDENCE)]
    assert notices[0].due_on == day
    adult = born_years_before(day, 18)  # the 18th birthday on the admission day
    assert long_stay(notices_due(history, adult, day, REF)) == []


# --- s85 at 12 weeks -------------------------------------------------------------------


def test_twelve_weeks_in_hospital_is_told_on_the_84th_day_and_not_before():
    history = [child_detained()]
    birth = d("2010-01-01")
    assert long_stay(notices_due(history, birth, DAY_84 - timedelta(days=1), REF)) == []
    notices = long_stay(notices_due(history, birth, DAY_84, REF))
    assert [(n.reason, n.due_on, n.org_code) for n in notices] == [
        (NoticeReason.LONG_STAY_REACHED, DAY_84, BUCKINGHAMSHIRE)]
    # Still owed (once: the scanner keeps it by its event id) on any later scan.
    assert len(long_stay(notices_due(history, birth, DAY_84 + timedelta(days=30), REF))) == 1


def test_discharged_on_day_83_is_never_told_a_stay_already_over_is_not_told_late():
    birth = d("2010-01-01")
    early = [child_detained(), left((DAY_84 - timedelta(days=1)).isoformat())]
    assert long_stay(notices_due(early, birth, DAY_84 - timedelta(days=1), REF)) == []
    assert long_stay(notices_due(early, birth, DAY_84 + timedelta(days=10), REF)) == []
    # Still in hospital on day 84: told that day; the same stay, its discharge on day 84 recorded before
    # the hub first looked (a stay over, learnt of late or from before this was deployed): not told.
    assert len(long_stay(notices_due([child_detained()], birth, DAY_84, REF))) == 1
    over = [child_detained(), left(DAY_84.isoformat())]
    assert long_stay(notices_due(over, birth, DAY_84, REF)) == []
    assert notices_due([child_detained(expected_stay_weeks=20, ehc_plan_la_gss=OXFORDSHIRE), left("2025-03-04")],
                       birth, d("2025-03-05"), REF) == []


def test_a_retracted_detention_owes_nothing():
    """The scanner reads the history without retracted changes: with the detention gone, no stay."""
    birth = d("2010-01-01")
    history = [child_detained(expected_stay_weeks=20, ehc_plan_la_gss=OXFORDSHIRE)]
    assert len(notices_due(history, birth, DAY_84, REF)) == 2
    assert notices_due([], birth, DAY_84, REF) == []


def test_turning_18_before_the_12_weeks_are_up_owes_no_notice_then():
    day = d(ADMITTED)
    turns_18 = DAY_84 - timedelta(days=1)
    birth = turns_18.replace(year=turns_18.year - 18)
    history = [child_detained()]
    assert long_stay(notices_due(history, birth, DAY_84, REF)) == []
    # Turning 18 the day after the 12-week day: told on it, not after the birthday.
    birth = (DAY_84 + timedelta(days=1)).replace(year=DAY_84.year - 18)
    assert is_child_on(birth, day)
    assert len(long_stay(notices_due(history, birth, DAY_84, REF))) == 1
    assert long_stay(notices_due(history, birth, DAY_84 + timedelta(days=1), REF)) == []


def test_an_expected_stay_under_12_weeks_waits_for_the_84th_day():
    history = [child_detained(expected_stay_weeks=11)]
    birth = d("2010-01-01")
    assert long_stay(notices_due(history, birth, d(ADMITTED), REF)) == []
    assert [n.reason for n in long_stay(notices_due(history, birth, DAY_84, REF))] == [
        NoticeReason.LONG_STAY_REACHED]


def test_told_at_admission_the_stay_owes_no_second_notice_at_12_weeks():
    history = [child_detained(expected_stay_weeks=12)]
    notices = long_stay(notices_due(history, d("2010-01-01"), DAY_84 + timedelta(days=5), REF))
    assert [n.reason for n in notices] == [NoticeReason.EXPECTED_LONG_STAY]


def test_any_section_leave_and_staying_on_informally_do_not_end_the_stay():
    history = [
        child_detained(code="02"),  # s2: not an s117 section; s85 is about the stay
        change(ChangeType.S17_LEAVE_STARTED, "2025-03-20"),
        change(ChangeType.S17_LEAVE_ENDED, "2025-03-22"),
        change(ChangeType.SECTION_ENDED_STAYED_INFORMALLY, "2025-04-01"),
    ]
    assert [(s.admitted_on, s.left_on) for s in stays(history)] == [(d(ADMITTED), None)]
    assert len(long_stay(notices_due(history, d("2010-01-01"), DAY_84, REF))) == 1


def test_each_stay_is_its_own_a_readmission_counts_from_its_own_day():
    history = [child_detained(), left("2025-04-01"), child_detained("2025-04-10", residence_la_gss=WORCESTERSHIRE)]
    found = stays(history)
    assert [(s.admitted_on, s.left_on) for s in found] == [(d(ADMITTED), d("2025-04-01")), (d("2025-04-10"), None)]
    notices = long_stay(notices_due(history, d("2010-01-01"), d("2025-07-03"), REF))  # 84 days after 10 April
    assert [(n.org_code, n.due_on) for n in notices] == [(WORCESTERSHIRE, d("2025-07-03"))]


def test_no_fixed_abode_tells_the_council_of_the_hospital_area_none_known_names_no_council():
    history = [child_detained(residence_la_gss=None, no_fixed_abode=True, expected_stay_weeks=26)]
    [notice] = long_stay(notices_due(history, d("2010-01-01"), d(ADMITTED), REF))
    assert (notice.org_code, notice.basis) == (OXFORDSHIRE, Basis.HOSPITAL_AREA)  # Oxford Health's area
    unknown = [child_detained(residence_la_gss=None, no_fixed_abode=True, hospital_ods="ZZZ", expected_stay_weeks=26)]
    [notice] = long_stay(notices_due(unknown, d("2010-01-01"), d(ADMITTED), REF))
    assert (notice.org_code, notice.basis) == (None, None)


# --- EHC plan --------------------------------------------------------------------------


def test_the_ehc_plan_council_is_told_on_admission_whatever_the_age_up_to_the_plan():
    history = [child_detained(ehc_plan_la_gss=OXFORDSHIRE)]
    for birth in (d("2010-01-01"), d("2003-06-01")):  # 15, and a young person of 21: EHC plans run to 25
        [notice] = [n for n in notices_due(history, birth, d(ADMITTED), REF)
                    if n.event_type is EventType.CHILD_EHC_PLAN_NOTICE]
        assert (notice.org_code, notice.basis, notice.reason, notice.due_on) == (
            OXFORDSHIRE, Basis.EHC_PLAN, NoticeReason.EHC_PLAN_ADMISSION, d(ADMITTED))
    # Without a plan named, no such notice.
    assert [n for n in notices_due([child_detained()], d("2010-01-01"), d(ADMITTED), REF)
            if n.event_type is EventType.CHILD_EHC_PLAN_NOTICE] == []


def test_candidates_need_no_date_of_birth_and_summaries_name_no_person():
    history = [child_detained(expected_stay_weeks=13, ehc_plan_la_gss=OXFORDSHIRE)]
    found = candidate_notices(history, d(ADMITTED), REF)
    assert {n.event_type for n in found} == {EventType.CHILD_LONG_STAY_NOTICE, EventType.CHILD_EHC_PLAN_NOTICE}
    for n in found:
        text = summary(n)
        assert ADMITTED in text and n.citation in text


def test_next_due_is_the_12_week_day_of_an_open_stay_not_told_at_admission():
    from hub.domain.children import next_due

    assert next_due([child_detained()], d(ADMITTED)) == DAY_84
    assert next_due([child_detained()], DAY_84) is None  # due now: the scan decides it, nothing after
    assert next_due([child_detained(expected_stay_weeks=12)], d(ADMITTED)) is None
    assert next_due([child_detained(), left("2025-03-10")], d("2025-03-10")) is None


# --- s85(4): the stay ended ----------------------------------------------------------------


def s85_told(stay_change, org=BUCKINGHAMSHIRE, event_id="N-s85") -> Told:
    return Told(event_id, EventType.CHILD_LONG_STAY_NOTICE, org, stay_change.change_id)


def test_a_stay_whose_s85_notice_went_is_told_ended_to_that_council_with_the_date():
    start = child_detained()
    ended = left((DAY_84 + timedelta(days=10)).isoformat())
    history = [start, ended]
    assert leaving_notices(history, [s85_told(start)], DAY_84 + timedelta(days=9), REF) == []  # not ended yet
    [notice] = leaving_notices(history, [s85_told(start)], DAY_84 + timedelta(days=10), REF)
    assert (notice.event_type, notice.reason, notice.org_code, notice.basis, notice.due_on) == (
        EventType.CHILD_LEFT_HOSPITAL_NOTICE, NoticeReason.STAY_ENDED, BUCKINGHAMSHIRE, Basis.ORDINARY_RESIDENCE,
        d(ended.effective_date.isoformat()))
    assert notice.stay.ended_by == ended and notice.citation == "Children Act 1989 s85(4)"
    text = summary(notice)
    assert ADMITTED in text and ended.effective_date.isoformat() in text and "left hospital" in text


def test_a_cto_or_death_ends_the_stay_as_leaving_does():
    start = child_detained()
    for ending, words in ((change(ChangeType.CTO_STARTED, "2025-07-01"), "community treatment order"),
                          (change(ChangeType.DIED, "2025-07-01"), "died")):
        [notice] = leaving_notices([start, ending], [s85_told(start)], d("2025-07-01"), REF)
        assert notice.stay.ended_by == ending and words in summary(notice)


def test_no_leaving_notice_for_a_stay_whose_s85_notice_did_not_go():
    """Ended on day 83: no s85 notice was owed, so none went, so no leaving notice. Nor for a stay whose
    notice went for another stay (each stay its own), nor for the EHC notice alone (s85(4) follows s85)."""
    start = child_detained()
    early = [start, left((DAY_84 - timedelta(days=1)).isoformat())]
    assert long_stay(notices_due([start], d("2010-01-01"), DAY_84 - timedelta(days=1), REF)) == []
    assert leaving_notices(early, [], DAY_84 + timedelta(days=30), REF) == []
    other = child_detained("2024-01-01")
    assert leaving_notices(early, [s85_told(other)], DAY_84, REF) == []
    ehc = Told("N-ehc", EventType.CHILD_EHC_PLAN_NOTICE, OXFORDSHIRE, start.change_id)
    assert leaving_notices(early, [ehc], DAY_84, REF) == []


def test_the_leaving_notice_goes_when_the_person_has_turned_18_since():
    """The s85(1) duty was owed to the council while the person was a child; telling it that the stay it
    knows of ended is still right at 18: no age test (child_on None), whatever the date of birth."""
    start = child_detained(expected_stay_weeks=20)
    leaving_day = d("2025-06-20")
    history = [start, left(leaving_day.isoformat())]
    turned_18 = born_years_before(d("2025-06-01"), 18)  # 18 on 2025-06-01, before leaving
    assert is_child_on(turned_18, d(ADMITTED)) and not is_child_on(turned_18, leaving_day)
    notices = leaving_notices(history, [s85_told(start)], leaving_day, REF)
    assert [n.child_on for n in notices] == [None]
    assert owed(notices, turned_18, leaving_day) == notices
    assert owed(notices, None, leaving_day) == notices  # nor the date of birth needed


def test_a_readmission_is_its_own_stay_and_its_leaving_is_told_only_if_its_own_notice_went():
    first, second = child_detained(expected_stay_weeks=20), child_detained("2025-05-01", expected_stay_weeks=20)
    history = [first, left("2025-04-01"), second, left("2025-06-01")]
    notices = leaving_notices(history, [s85_told(first)], d("2025-06-02"), REF)
    assert [(n.stay.change, n.due_on) for n in notices] == [(first, d("2025-04-01"))]


# --- withdrawals (a retraction) ------------------------------------------------------------


def test_a_retracted_detention_withdraws_each_notice_that_went_once_each_telling_nothing_of_it_again():
    start = child_detained(expected_stay_weeks=20, ehc_plan_la_gss=OXFORDSHIRE)
    told = [s85_told(start, event_id="N-s85"),
            Told("N-ehc", EventType.CHILD_EHC_PLAN_NOTICE, OXFORDSHIRE, start.change_id)]
    assert withdrawals([start], told, {}, REF) == []  # nothing retracted: nothing withdrawn
    found = withdrawals([], told, {start.change_id: start}, REF)  # the history without it
    assert [(n.event_type, n.reason, n.org_code, n.basis, n.withdraws) for n in found] == [
        (EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ADMISSION_IN_ERROR, BUCKINGHAMSHIRE,
         Basis.ORDINARY_RESIDENCE, "N-s85"),
        (EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ADMISSION_IN_ERROR, OXFORDSHIRE, Basis.EHC_PLAN, "N-ehc")]
    for n in found:
        # The detention's facts (section, hospital, residence, plan) are not carried again.
        assert (n.stay.legal_status_code, n.stay.hospital_ods, n.stay.change.residence_la_gss,
                n.stay.change.ehc_plan_la_gss, n.stay.change.legal_status_code) == (None, None, None, None, None)
        assert n.child_on is None and "N-" in summary(n) and "recorded in error" in summary(n)


def test_a_notice_that_did_not_go_is_not_withdrawn():
    start = child_detained(expected_stay_weeks=20)
    assert withdrawals([], [], {start.change_id: start}, REF) == []
    # A retraction of some other change (a leave) withdraws nothing.
    leave = change(ChangeType.S17_LEAVE_STARTED, "2025-03-20")
    assert withdrawals([start], [s85_told(start)], {leave.change_id: leave}, REF) == []


def test_a_stay_ended_then_the_ending_retracted_the_leaving_notice_is_withdrawn_the_stay_continues():
    start = child_detained(expected_stay_weeks=20)
    ended = left("2025-06-01")
    told = [s85_told(start), Told("N-left", EventType.CHILD_LEFT_HOSPITAL_NOTICE, BUCKINGHAMSHIRE,
                                  start.change_id, ended.change_id)]
    # Before the retraction: nothing withdrawn; after: the history without the leaving (the child in hospital).
    assert withdrawals([start, ended], told, {}, REF) == []
    [notice] = withdrawals([start], told, {ended.change_id: ended}, REF)
    assert (notice.reason, notice.withdraws, notice.org_code, notice.due_on) == (
        NoticeReason.STAY_CONTINUES, "N-left", BUCKINGHAMSHIRE, d("2025-06-01"))
    assert notice.stay.left_on is None and notice.stay.change == start  # the stay as it stands
    assert "continues" in summary(notice)
    # The s85 notice stands (the stay is real): no new leaving notice while in hospital ...
    assert leaving_notices([start], told, d("2025-06-10"), REF) == []
    # ... and a later leaving is told by a notice of its own (a new ending).
    again = left("2025-07-01")
    [later] = leaving_notices([start, again], told, d("2025-07-01"), REF)
    assert later.stay.ended_by == again
    # Another ending already there (recorded twice, one retracted): the leaving is withdrawn as in error.
    [notice] = withdrawals([start, again], told, {ended.change_id: ended}, REF)
    assert notice.reason is NoticeReason.LEAVING_IN_ERROR


def test_a_detention_retracted_after_its_leaving_notice_withdraws_both_as_sent_in_error():
    start = child_detained(expected_stay_weeks=20)
    ended = left("2025-06-01")
    told = [s85_told(start), Told("N-left", EventType.CHILD_LEFT_HOSPITAL_NOTICE, BUCKINGHAMSHIRE,
                                  start.change_id, ended.change_id)]
    found = withdrawals([ended], told, {start.change_id: start}, REF)
    assert [(n.withdraws, n.reason) for n in found] == [("N-s85", NoticeReason.ADMISSION_IN_ERROR),
                                                        ("N-left", NoticeReason.ADMISSION_IN_ERROR)]


# --- one notice a stay: a detention of the stay arriving late ------------------------------------------


def test_an_earlier_detention_of_the_same_stay_begins_it_the_later_one_is_within_it():
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16)
    late = child_detained("2025-03-03", "02")
    [stay] = stays([told, late])
    assert (stay.change, stay.admitted_on, stay.start_ids()) == (late, d("2025-03-03"),
                                                                (late.change_id, told.change_id))
    # A readmission is not within the stay before it.
    again = child_detained("2025-05-01")
    assert [s.start_ids() for s in stays([late, left("2025-04-01"), again])] == [(late.change_id,), (again.change_id,)]


def test_a_notice_told_under_a_later_detention_of_the_stay_is_corrected_once_not_withdrawn():
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16)
    late = child_detained(ADMITTED, "02")
    notice = s85_told(told)
    assert corrections([told], [notice], {}, REF) == []  # as told: nothing to correct
    [c] = corrections([told, late], [notice], {}, REF)
    assert (c.event_type, c.reason, c.org_code, c.basis, c.corrects, c.replaces, c.supersedes, c.told_on) == (
        EventType.CHILD_NOTICE_CORRECTED, NoticeReason.ADMISSION_CORRECTED, BUCKINGHAMSHIRE,
        Basis.ORDINARY_RESIDENCE, "N-s85", "N-s85", "N-s85", d("2025-03-20"))
    assert c.stay.change == late and c.child_on is None
    assert "2025-03-03" in summary(c) and "2025-03-20" in summary(c) and "N-s85" in summary(c)
    # Once told, nothing more; the leaving of the stay goes to the council told, as for the stay it told.
    fixed = Told("N-fix", EventType.CHILD_NOTICE_CORRECTED, BUCKINGHAMSHIRE, late.change_id, corrects="N-s85")
    assert corrections([told, late], [notice, fixed], {}, REF) == []
    [leaving] = leaving_notices([told, late, left("2025-07-01")], [notice], d("2025-07-01"), REF)
    assert leaving.stay.change == late
    # The later detention retracted while the child was in hospital (the stay from the earlier one goes on):
    # the notice stands (not withdrawn); what it told is corrected as before.
    assert withdrawals([late], [notice], {told.change_id: told}, REF) == []
    assert [x.corrects for x in corrections([late], [notice], {told.change_id: told}, REF)] == ["N-s85"]
    # The earlier one retracted after its correction went: the stay is as first told, told again.
    [back] = corrections([told], [notice, fixed], {late.change_id: late}, REF)
    assert (back.replaces, back.stay.change, back.told_on) == ("N-fix", told, d(ADMITTED))


# --- another council concerned: an earlier detention of the stay naming another council ----------------


def test_an_earlier_detention_naming_another_council_withdraws_the_notices_from_the_councils_told():
    """The notices went under the s3 detention (Bucks the council of ordinary residence, Oxfordshire the EHC
    plan's). The s2 detention that began the same stay comes late naming Worcestershire for both: Bucks and
    Oxfordshire are told their notice no longer applies (a withdrawal naming it, nothing of the stay as it
    now stands nor which council is concerned), not corrected; Worcestershire is owed both notices."""
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16, ehc_plan_la_gss=OXFORDSHIRE)
    late = child_detained(ADMITTED, "02", residence_la_gss=WORCESTERSHIRE, ehc_plan_la_gss=WORCESTERSHIRE)
    notices = [s85_told(told), Told("N-ehc", EventType.CHILD_EHC_PLAN_NOTICE, OXFORDSHIRE, told.change_id)]
    history = [told, late]
    found = withdrawals(history, notices, {}, REF)
    assert [(n.event_type, n.reason, n.org_code, n.basis, n.withdraws, n.due_on) for n in found] == [
        (EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ANOTHER_COUNCIL, BUCKINGHAMSHIRE, Basis.ORDINARY_RESIDENCE,
         "N-s85", d("2025-03-20")),
        (EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ANOTHER_COUNCIL, OXFORDSHIRE, Basis.EHC_PLAN, "N-ehc",
         d("2025-03-20"))]
    for n in found:
        # Nothing of the stay as it now stands: the bare detention the council was told, no other council.
        assert (n.stay.change, n.stay.admitted_on) == (replace(told, legal_status_code=None, hospital_ods=None,
                                                               gp_practice_ods=None, residence_la_gss=None,
                                                               expected_stay_weeks=None, ehc_plan_la_gss=None),
                                                       d("2025-03-20"))
        text = summary(n)
        assert n.withdraws in text and "another council" in text and ADMITTED not in text
        assert WORCESTERSHIRE not in text and n.child_on is None
    assert corrections(history, notices, {}, REF) == []  # not corrected: not the councils concerned
    today = DAY_84 + timedelta(days=1)
    owed_now = unsent(candidate_notices(history, today, REF), history, notices, {})
    assert sorted((n.event_type, n.org_code, n.renews) for n in owed_now) == sorted([
        (EventType.CHILD_LONG_STAY_NOTICE, WORCESTERSHIRE, None),
        (EventType.CHILD_EHC_PLAN_NOTICE, WORCESTERSHIRE, None)])
    # The stay ends before Worcestershire is told: no leaving notice to Bucks (not concerned), nor to anyone.
    ended = [*history, left(today.isoformat())]
    assert leaving_notices(ended, notices, today, REF) == []
    worcs = Told("N-worcs", EventType.CHILD_LONG_STAY_NOTICE, WORCESTERSHIRE, late.change_id)
    [leaving] = leaving_notices(ended, [*notices, worcs], today, REF)
    assert leaving.org_code == WORCESTERSHIRE
    # A notice withdrawn is withdrawn once, and not corrected after.
    gone = [Told("W-s85", EventType.CHILD_NOTICE_WITHDRAWN, BUCKINGHAMSHIRE, told.change_id, withdraws="N-s85"),
            Told("W-ehc", EventType.CHILD_NOTICE_WITHDRAWN, OXFORDSHIRE, told.change_id, withdraws="N-ehc")]
    assert withdrawals(history, [*notices, *gone], {}, REF) == []
    assert corrections(history, [*notices, *gone], {}, REF) == []


def test_a_detention_naming_no_council_displaces_no_one_the_council_told_is_corrected():
    """A late detention naming no EHC plan, or with no fixed abode at a hospital whose council is not known,
    names no other council: the council told stays the one known, corrected as before."""
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16, ehc_plan_la_gss=OXFORDSHIRE)
    late = child_detained(ADMITTED, "02", residence_la_gss=None, hospital_ods="ZZZ99")
    notices = [s85_told(told), Told("N-ehc", EventType.CHILD_EHC_PLAN_NOTICE, OXFORDSHIRE, told.change_id)]
    assert withdrawals([told, late], notices, {}, REF) == []
    assert sorted(c.corrects for c in corrections([told, late], notices, {}, REF)) == ["N-ehc", "N-s85"]


def test_a_council_concerned_again_is_told_anew_and_the_one_displaced_in_turn_withdrawn():
    """Bucks told, then withdrawn (Birmingham's detention began the stay); an earlier detention still names
    Bucks again: Birmingham's notice is withdrawn and Bucks is told anew (`renews` the withdrawal it had),
    once: a notice told anew and standing is told."""
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16)
    late = child_detained("2025-03-10", "02", residence_la_gss=BIRMINGHAM, expected_stay_weeks=16)
    earliest = child_detained(ADMITTED, "02", expected_stay_weeks=16)
    notices = [s85_told(told),
               Told("W-1", EventType.CHILD_NOTICE_WITHDRAWN, BUCKINGHAMSHIRE, told.change_id, withdraws="N-s85"),
               Told("N-bham", EventType.CHILD_LONG_STAY_NOTICE, BIRMINGHAM, late.change_id)]
    history = [told, late, earliest]
    today = d("2025-03-25")
    assert [(n.org_code, n.reason, n.withdraws) for n in withdrawals(history, notices, {}, REF)] == [
        (BIRMINGHAM, NoticeReason.ANOTHER_COUNCIL, "N-bham")]
    [again] = unsent(candidate_notices(history, today, REF), history, notices, {})
    assert (again.event_type, again.org_code, again.renews, again.stay.change) == (
        EventType.CHILD_LONG_STAY_NOTICE, BUCKINGHAMSHIRE, "W-1", earliest)
    assert corrections(history, notices, {}, REF) == []  # Bucks' notice withdrawn; Birmingham's to be
    renewed = Told("N-again", EventType.CHILD_LONG_STAY_NOTICE, BUCKINGHAMSHIRE, earliest.change_id)
    assert unsent(candidate_notices(history, today, REF), history, [*notices, renewed], {}) == []
    # Or Birmingham's detention retracted: the stay from the notice told, Bucks told anew, Birmingham's
    # notice withdrawn as sent in error (its detention was).
    back = [told]
    assert [(n.org_code, n.reason) for n in withdrawals(back, notices, {late.change_id: late}, REF)] == [
        (BIRMINGHAM, NoticeReason.ADMISSION_IN_ERROR)]
    [again] = unsent(candidate_notices(back, today, REF), back, notices, {late.change_id: late})
    assert (again.org_code, again.renews, again.stay.change) == (BUCKINGHAMSHIRE, "W-1", told)


def test_a_notice_told_under_a_detention_retracted_since_is_still_told_for_its_stay():
    """Told under the s3 detention; the earlier s2 of the same stay came late; the s3 is retracted (the child
    was in hospital on its day): the stay is the one told, not owed again (nor its leaving lost)."""
    told = child_detained("2025-03-20", "03", expected_stay_weeks=16)
    late = child_detained(ADMITTED, "02", expected_stay_weeks=16)
    retracted = {told.change_id: told}
    assert unsent(candidate_notices([late], d("2025-04-01"), REF), [late], [s85_told(told)], retracted) == []
    ended = [late, left("2025-06-01")]
    [leaving] = leaving_notices(ended, [s85_told(told)], d("2025-06-01"), REF, retracted)
    assert leaving.org_code == BUCKINGHAMSHIRE


def test_the_fhir_child_notice_codes_are_the_reasons_and_bases():
    from hub.fhir.conformance import CHILD_NOTICE_CODES

    assert sorted(c[0] for c in CHILD_NOTICE_CODES) == sorted([r.value for r in NoticeReason]
                                                              + [b.value for b in Basis])


def test_a_child_of_no_fixed_abode_at_a_hospital_whose_council_was_split_has_no_council_found_never_the_abolished():
    """H-03 / H-15: a hospital's council split between several successors after the admission (Cumbria, 1 April
    2023) is no council the s85 notice can go to: no council found (the scanner says so), not Cumbria's code,
    which no one answers for. A single successor (Buckinghamshire County's) is followed."""
    from tests.unit.domain.fakes import BUCKS_COUNTY_HOSPITAL, CUMBRIA_HOSPITAL

    split = detained("2023-02-01", "03", hospital_ods=CUMBRIA_HOSPITAL, no_fixed_abode=True)
    [notice] = candidate_notices([split], d("2023-04-26"), REF)
    assert (notice.org_code, notice.basis) == (None, None)
    followed = detained("2020-02-01", "03", hospital_ods=BUCKS_COUNTY_HOSPITAL, no_fixed_abode=True)
    [notice] = candidate_notices([followed], d("2020-04-25"), REF)
    assert (notice.org_code, notice.basis) == (BUCKINGHAMSHIRE, Basis.HOSPITAL_AREA)
