"""Fixed, synthetic inputs for the outbound message: golden files, bench, docs.

Everything here is invented. The NHS numbers are in the 999 test range with a
valid modulus-11 check digit; org codes are real public ODS/GSS codes used
only as organisation identifiers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from hub.domain.model import (
    ChangeType,
    Determination,
    DomainEvent,
    EventType,
    Org,
    RegisterChange,
    ReviewDue,
    S117Status,
)
from hub.domain.views import roles_of, view_of
from hub.fhir.messages import FIELD_GROUPS, RESPONSIBILITY, PatientDetails

NHS_NUMBER = "9990000018"
PERSON_ID = "p-7c1e0b9a"

BUCKS_COUNCIL = Org("E06000060", "Buckinghamshire Council", "council")
OXON_COUNCIL = Org("E10000025", "Oxfordshire County Council", "council")
BOB_ICB = Org("QU9", "NHS Buckinghamshire, Oxfordshire and Berkshire West ICB", "icb")
HOSPITAL_ODS = "RX3"  # a trust ODS code; its name is not needed

PATIENT = PatientDetails(
    nhs_number=NHS_NUMBER,
    given_name="Alex",
    family_name="Testperson",
    birth_date=date(1980, 2, 29),
    postcode="HP20 1AA",
)

_ENTITLEMENT = Determination(
    None,
    "Detained under s3 (legal status 03), a qualifying section; entitled from leaving hospital on 2024-03-15.",
    "Worcs 1.1, 3.3",
)
_COUNCIL_BUCKS = Determination(
    BUCKS_COUNCIL,
    "Ordinarily resident in Buckinghamshire immediately before the detention.",
    "Worcs 4.3; Care Act 2014 s39(4)",
)
_COMMISSIONER = Determination(
    BOB_ICB,
    "Registered with a GP practice in sub-ICB location 14Y (BOB ICB) when detained after 1 Sept 2020.",
    "Worcs 4.4.1",
)
_REVIEW = ReviewDue(
    date(2024, 6, 14), "first", "First review within 3 months of discharge.", "Worcs 14.1",
    "left-hospital", date(2024, 3, 14),
)


def entitlement_started() -> tuple[DomainEvent, S117Status, RegisterChange]:
    change = RegisterChange(
        change_id="c-0001",
        person_id=PERSON_ID,
        change_type=ChangeType.LEFT_HOSPITAL,
        effective_date=date(2024, 3, 15),
        notified_on=date(2024, 3, 15),
        recorded_on=date(2024, 3, 18),
        source="trust:RX3",
        hospital_ods=HOSPITAL_ODS,
    )
    status = S117Status(
        person_id=PERSON_ID,
        as_of=date(2024, 3, 15),
        entitled=True,
        entitlement=_ENTITLEMENT,
        entitlement_start=date(2024, 3, 15),
        qualifying_section_code="03",
        detention_start=date(2024, 1, 8),
        responsible_council=_COUNCIL_BUCKS,
        responsible_commissioner=_COMMISSIONER,
        next_review=_REVIEW,
        pending_reviews=(_REVIEW,),
    )
    event = DomainEvent(
        event_type=EventType.ENTITLEMENT_STARTED,
        person_id=PERSON_ID,
        change_id=change.change_id,
        occurred_on=date(2024, 3, 15),
        summary="Left hospital after detention under a qualifying section: s117 aftercare entitlement started.",
    )
    return event, status, change


def responsibility_transferred() -> tuple[DomainEvent, S117Status, RegisterChange]:
    """Re-detention under s3 while already receiving aftercare: the council
    follows the new ordinary residence, the commissioner stays (Worcs 4.4.2)."""
    change = RegisterChange(
        change_id="c-0042",
        person_id=PERSON_ID,
        change_type=ChangeType.DETAINED,
        effective_date=date(2025, 2, 3),
        notified_on=date(2025, 2, 4),
        recorded_on=date(2025, 2, 4),
        source="trust:RX3",
        legal_status_code="03",
        hospital_ods=HOSPITAL_ODS,
        residence_la_gss=OXON_COUNCIL.code,
        already_receiving_s117_from=BOB_ICB.code,
    )
    status = S117Status(
        person_id=PERSON_ID,
        as_of=date(2025, 2, 3),
        entitled=True,
        entitlement=_ENTITLEMENT,
        entitlement_start=date(2024, 3, 15),
        detained=True,
        in_hospital=True,
        qualifying_section_code="03",
        detention_start=date(2025, 2, 3),
        responsible_council=Determination(
            OXON_COUNCIL,
            "New qualifying detention before s117 discharge: the council of ordinary residence "
            "immediately before the new detention (Oxfordshire) becomes responsible.",
            "Worcs 4.3.3; R (Worcestershire CC) v SSHSC [2021] EWHC 682",
        ),
        responsible_commissioner=Determination(
            BOB_ICB,
            "Already receiving s117 aftercare: the responsible commissioner stays responsible.",
            "Worcs 4.4.2, 4.4.9",
        ),
    )
    event = DomainEvent(
        event_type=EventType.RESPONSIBILITY_TRANSFERRED,
        person_id=PERSON_ID,
        change_id=change.change_id,
        occurred_on=date(2025, 2, 3),
        summary="Responsible council changed from Buckinghamshire Council to Oxfordshire County Council on re-detention.",
        also_notify=(BUCKS_COUNCIL.code,),
    )
    return event, status, change


def council_undetermined() -> tuple[DomainEvent, S117Status, RegisterChange]:
    """No place of residence before the detention and none yet where discharged to: no council is
    responsible until that area is known, the hospital's council coordinates (Bucks "If, exceptionally,
    no place of residence"); said to a body granted `responsibility` (hazard H-03)."""
    event, status, change = entitlement_started()
    status = replace(status, responsible_council=None, coordinating_council=Determination(
        OXON_COUNCIL,
        "Coordinating: no place of residence before the detention, so the hospital's council coordinates "
        "until the discharge area is known.",
        "Bucks 'If, exceptionally, no place of residence'",
    ))
    return event, status, change


SENT_AT = datetime(2024, 3, 18, 9, 30, 0, tzinfo=UTC)
SOURCE_ENDPOINT = "https://s117-hub.localhost/fhir/messages"
LEGAL_STATUS_03 = "Formally detained under Mental Health Act Section 3"


def golden_cases() -> dict[str, dict[str, Any]]:
    """Golden-file name -> keyword arguments for build_event_message."""
    ev, st, ch = entitlement_started()
    tev, tst, tch = responsibility_transferred()
    uev, ust, uch = council_undetermined()
    common = {
        "patient": PATIENT,
        "source_endpoint": SOURCE_ENDPOINT,
        "legal_status_display": LEGAL_STATUS_03,
    }
    return {
        "entitlement-started-all-groups": {
            **common,
            "event": ev,
            "status": st,
            "change": ch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b01",
            "sent_at": SENT_AT,
            "recipient": BUCKS_COUNCIL,
            "include": FIELD_GROUPS,
        },
        "entitlement-started-responsibility-only": {
            **common,
            "event": ev,
            "status": st,
            "change": ch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b02",
            "sent_at": SENT_AT,
            "recipient": BOB_ICB,
            "include": frozenset({RESPONSIBILITY}),
        },
        "responsibility-transferred": {
            **common,
            "event": tev,
            "status": tst,
            "change": tch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b03",
            "sent_at": datetime(2025, 2, 4, 14, 5, 12, tzinfo=UTC),
            # The outgoing council must hear of it too (domain: also_notify).
            "recipient": BUCKS_COUNCIL,
            "include": FIELD_GROUPS,
        },
        # Every message the dispatcher sends carries the recipient's position
        # (hub/domain/views.py) and its per-(person, recipient) version.
        "entitlement-started-with-position": {
            **common,
            "event": ev,
            "status": st,
            "change": ch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b04",
            "sent_at": SENT_AT,
            "recipient": BUCKS_COUNCIL,
            "include": FIELD_GROUPS,
            "position": view_of(st, roles_of(st)[BUCKS_COUNCIL.code], FIELD_GROUPS),
            "version": 1,
        },
        # No responsible council determined yet, said to the coordinating council (granted `responsibility`).
        "entitlement-started-council-undetermined": {
            **common,
            "event": uev,
            "status": ust,
            "change": uch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b06",
            "sent_at": SENT_AT,
            "recipient": OXON_COUNCIL,
            "include": FIELD_GROUPS,
            "position": view_of(ust, roles_of(ust)[OXON_COUNCIL.code], FIELD_GROUPS),
            "version": 1,
        },
        # A body told it was responsible, corrected by history that arrived late.
        "notification-corrected": {
            **common,
            "event": DomainEvent(
                event_type=EventType.NOTIFICATION_CORRECTED, person_id=tst.person_id, change_id=tch.change_id,
                occurred_on=tch.effective_date,
                summary="Your position for this person changed: no longer the responsible council.",
                details={"supersedes": "5d41c3a4-7c1e-5f0b-9a55-2f0e4d6b1a01"},
            ),
            "status": tst,
            "change": tch,
            "message_id": "0b6f1f8e-6a51-4c57-9a0e-0c7f1d2a3b05",
            "sent_at": datetime(2025, 2, 4, 14, 5, 12, tzinfo=UTC),
            "recipient": BUCKS_COUNCIL,
            "include": frozenset({RESPONSIBILITY}),
            "position": {"roles": []},
            "version": 2,
            "supersedes": "5d41c3a4-7c1e-5f0b-9a55-2f0e4d6b1a01",
            "reason": "no longer the responsible council; council: Worcestershire, ...",
        },
    }
