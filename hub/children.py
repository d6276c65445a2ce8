"""The children's notices: the scanner that sends them (hub/domain/children.py decides).

Every `child_notice_scan_interval_seconds` the scanner reads the history of
each person with a detention on the register, works out the notices it owes
by today without the personal details (`candidate_notices`), drops those
already decided (a `disclosures` row for the notice's event id: allowed,
denied or no-subscription alike), and only then reads the person's date of
birth to keep those owed to a child. Each is shared with its one council
through hub/delivery/queue.py `share`, as a drift alert is: the agreement's
decision (deny by default: an agreement in force must list the event type,
or "*"), each active subscription taking the event queued, every decision a
`disclosures` row. Never routed by the dispatcher: the notice goes to the
council named (the council responsible for the child, the council
maintaining the EHC plan) and to no one else, and that council becomes no
recipient of anything else about the person (no position, no view held).

Idempotent: the event id is a UUIDv5 of the person, the detention that began
the stay, the event type and the council, so a scan again, a restart or a
second instance decides it once (checked again inside the write
transaction; a second queuing on the same subscription is refused by the
deliveries' unique key). The s85 notice has one id per stay whether it went
at admission or at 12 weeks: once per stay. A stay is the stay whichever of
its detentions a notice was decided under (`event_ids_for`: the id under
each detention of the stay is looked for), so an earlier detention of the
same stay arriving late, which now begins it, brings no second notice; when
it changes what the notice told (the admission's date, section or hospital)
the council told is sent a correction (s117-child-notice-corrected, owed
under any agreement in force as a withdrawal is; `corrections`). When the
detention that now begins the stay names another council (of ordinary
residence, the EHC plan's), the council told is sent a withdrawal instead
(`another-council-concerned`) and the council now concerned its notice; a
council withdrawn and concerned again is told anew, under an id following
the withdrawal it had (`event_ids_for`). Notices went under the person's
hub id: those of the persons merged into them, and of the persons they
were merged into by a merge reversed since, count as theirs for the
changes they hold (`notice_persons`).

After a notice (`_following`): the notices that went, and their
withdrawals, are read back from their `allowed` disclosures (each matched to
its stay by its event id), for someone whose history has an ending, a
retraction or more than one detention; a notice owed to a council that was
told it and not withdrawn is not sent again (`unsent`). A stay whose s85 notice
went and that has ended owes the council told it the leaving notice
(s117-child-left-hospital-notice, s85(4); its id also names the change that
ended the stay, so a leaving retracted and a later one is told again). A
notice that went whose detention (or, a leaving notice, whose ending) was
retracted owes that council its withdrawal (s117-child-notice-withdrawn,
naming it in `supersedes`; id: of the notice withdrawn, so once). A
withdrawal is a rectification (UK GDPR Art. 19): any agreement in force for
the council covers it, as `s117-notification-corrected` (hub/sharing.py); a
leaving notice needs the agreement to list it, as the notices do. Everyone
with a detention is scanned, retracted or not; a retraction changes the
fingerprint (it counts the retracted changes), so the next scan reads them;
so does a retraction reversed (hub/unretractions.py: it counts the reversals),
and the detention reinstated owes the council its notice again, told anew.

What a notice carries (minimum necessary): the MessageHeader with the
S117-ChildNotice extension (why it was sent, why this council, the expected
stay, the citation), the Patient (the hub person id; the NHS number, name
and date of birth as the agreement grants identity and demographics), the
detention Encounter (section, admission date, hospital: legal-status; with
it the expected stay and the EHC plan's council as the inbound Encounter
carries them, hub/sharing.py CHILD_FIELDS_GROUP, and only then the
expected stay in the S117-ChildNotice extension), and the event's summary
(explanations). A leaving notice's Encounter carries the
end of the stay too; a withdrawal of a notice whose detention was recorded
in error carries no Encounter, section or expected stay (nothing the
retracted detention said is told again). Never the postcode, the responsible
bodies, funding, the workflow, the position or the person's history,
whatever the agreement grants. The EpisodeOfCare (every hub message has one)
says only whether the detention is one s117 would follow: `planned` under a
qualifying section, else `cancelled`.

Logs name event ids, event types and councils, never a person's details.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import case, exists, func, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.delivery import queue
from hub.domain.children import (
    STAY_NOTICES,
    ChildNotice,
    NoticeReason,
    Told,
    candidate_notices,
    corrections,
    leaving_notices,
    next_due,
    owed,
    summary,
    unsent,
    withdrawals,
)
from hub.domain.dates import england_day
from hub.domain.model import ChangeType, Determination, DomainEvent, EventType, Org, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.fhir.messages import DEMOGRAPHICS, EXPLANATIONS, IDENTITY, LEGAL_STATUS, PatientDetails, build_event_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, GSS_CODE_SYSTEM, Namespaces
from hub.ids import uuid4, uuid5
from hub.ingest.service import load_person_details
from hub.observability.logging import get_logger
from hub.periodic import every
from hub.sharing import CHILD_FIELDS_GROUP, SharingAgreements
from hub.store.db import write_transaction
from hub.store.schema import (
    change_retraction_reversals,
    change_retractions,
    disclosures,
    including_retracted,
    not_retracted,
    person_merge_reversals,
    person_merges,
    persons,
    register_changes,
)

log = get_logger("hub.children")
SOURCE = "child-notices"
EVENT_NAMESPACE = uuid.UUID("c41d7e5a-2f3b-4c8e-9d16-117c41d00001")
MESSAGE_NAMESPACE = uuid.UUID("c41d7e5a-2f3b-4c8e-9d16-117c41d00002")
# The field groups a notice may carry (those the agreement grants, of these).
NOTICE_GROUPS = frozenset({IDENTITY, DEMOGRAPHICS, LEGAL_STATUS, EXPLANATIONS})
# Channels that carry hub messages one by one; "council-file" carries register rows.
CHANNELS = frozenset({"webhook", "feed", "kafka", "file", "fhir"})
_STAY_STARTS = (ChangeType.DETAINED.value, ChangeType.CTO_REVOKED.value)
_STAY_ENDS = (ChangeType.LEFT_HOSPITAL.value, ChangeType.CTO_STARTED.value, ChangeType.DIED.value)
# The notices a later one follows (a leaving notice, a withdrawal): read back from their `allowed` disclosures.
_TOLD_TYPES = (EventType.CHILD_LONG_STAY_NOTICE.value, EventType.CHILD_EHC_PLAN_NOTICE.value,
               EventType.CHILD_LEFT_HOSPITAL_NOTICE.value, EventType.CHILD_NOTICE_CORRECTED.value,
               EventType.CHILD_NOTICE_WITHDRAWN.value)


def _notice_id(person_id: str, stay_change_id: str, event_type: str, org_code: str | None,
               ended_by_change_id: str | None = None) -> str:
    key = f"{person_id}/{stay_change_id}/{event_type}/{org_code}"
    return uuid5(EVENT_NAMESPACE, key if ended_by_change_id is None else f"{key}/{ended_by_change_id}")


def _correction_id(notice_event_id: str, stay_change_id: str) -> str:
    return uuid5(EVENT_NAMESPACE, f"{notice_event_id}/corrected/{stay_change_id}")


def _withdrawal_id(notice_event_id: str) -> str:
    return uuid5(EVENT_NAMESPACE, f"{notice_event_id}/withdrawn")


def _renewal_id(withdrawal_event_id: str, stay_change_id: str) -> str:
    return uuid5(EVENT_NAMESPACE, f"{withdrawal_event_id}/renewed/{stay_change_id}")


def event_ids_for(person_ids: str | Sequence[str], notice: ChildNotice) -> list[str]:
    """The notice's event id, then the ids it may have been decided under before: one notice per person,
    stay, event type and council, whichever detention of the stay it was decided under (the first id: the
    detention that begins the stay now; the others: each later detention of the same stay, so that an
    earlier detention arriving late does not make the stay a new one) and whichever of the person's hub ids
    (`person_ids`: the person's own first, then each person merged into them, whose notices went under
    theirs); a leaving notice one per ending of the stay too (a leaving retracted, a later one is told); a
    withdrawal one per notice withdrawn; a correction one per notice corrected and detention it tells; a
    notice told anew (its council's notices of the stay withdrawn, it is the council concerned again) one per
    withdrawal it follows and detention of the stay (person-independent, as those are)."""
    if notice.withdraws is not None:
        return [_withdrawal_id(notice.withdraws)]
    if notice.corrects is not None:
        return [_correction_id(notice.corrects, notice.stay.change.change_id)]
    if notice.renews is not None:
        return [_renewal_id(notice.renews, start) for start in notice.stay.start_ids()]
    ended = notice.stay.ended_by if notice.event_type is EventType.CHILD_LEFT_HOSPITAL_NOTICE else None
    return [_notice_id(person_id, start, notice.event_type.value, notice.org_code,
                       ended.change_id if ended is not None else None)
            for person_id in ([person_ids] if isinstance(person_ids, str) else person_ids)
            for start in notice.stay.start_ids()]


def event_id_for(person_id: str, notice: ChildNotice) -> str:
    """The id a notice not yet decided is sent under (`event_ids_for`, the first)."""
    return event_ids_for(person_id, notice)[0]


_MAX_MERGES = 32  # merges of merges followed, at most (as hub/store/merged.py follows a chain)


async def notice_persons(conn: Any, person_id: str) -> list[str]:
    """The other hub persons whose id a notice about a change `person_id` holds now may have gone under
    (a notice's id names the person it was decided for, and the detention: `event_ids_for`), and so whose
    notices count as the person's for the changes they hold: each person merged into them (POST
    /v1/persons/merge, HL7 A40: their history moved here; `person_merges`), and each person they were
    merged into by a merge reversed since (POST /v1/persons/merges/{id}/reversal, hub/unmerges.py: while
    it stood, their changes were that person's and a notice decided then went under that person's id; the
    changes moved back, `person_merge_reversals`), each followed in turn (merges of merges, a reversal of
    each). A notice under one of them about a change the person does not hold matches nothing of theirs."""
    found: list[str] = []
    frontier = [person_id]
    for _ in range(_MAX_MERGES):
        if not frontier:
            break
        rows = (await conn.execute(union(
            select(person_merges.c.superseded_person_id.label("other")).where(
                person_merges.c.retained_person_id.in_(frontier), person_merges.c.superseded_person_id.is_not(None)),
            select(person_merge_reversals.c.retained_person_id.label("other")).where(
                person_merge_reversals.c.superseded_person_id.in_(frontier),
                person_merge_reversals.c.retained_person_id.is_not(None))))).scalars().all()
        frontier = [p for p in dict.fromkeys(rows) if p != person_id and p not in found]
        found.extend(frontier)
    return found


def message_id_for(event_id: str, org_code: str) -> str:
    return uuid5(MESSAGE_NAMESPACE, f"{event_id}/{org_code}")


class ChildNoticeScanner:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, sharing: SharingAgreements,
                 protector: DataProtector, hub_endpoint: str, ns: Namespaces = DEFAULT_NAMESPACES,
                 today: Callable[[], date] = england_day) -> None:
        self._engine = engine
        self._ref = ref
        self._sharing = sharing
        self._protector = protector
        self._hub_endpoint = hub_endpoint
        self._ns = ns
        self._today = today
        self._unrouted: set[str] = set()  # notices with no council to tell, said once a process
        # person -> (their history's fingerprint when scanned, the next day a notice can fall due without
        # a new change: None, never). Forgotten if the scan of them did not finish (`_scan_person`).
        self._settled: dict[str, tuple[tuple[int, str, int, int], date | None]] = {}

    async def run_once(self) -> int:
        """Scan once; returns how many notices were decided (shared, denied or unsubscribed)."""
        today = self._today()
        async with self._engine.connect() as conn:
            # Everyone with a detention, retracted or not (a notice of a detention retracted since is
            # withdrawn), with their history's fingerprint (its changes' count, the latest received and
            # how many are retracted, and how many retractions reversed): someone settled by an earlier scan
            # whose history is the same and who has nothing falling due by today is passed over unread.
            retracted = exists().where(change_retractions.c.change_id == register_changes.c.change_id)
            people = (await conn.execute(
                select(register_changes.c.person_id, func.count(), func.max(register_changes.c.received_at),
                       func.sum(case((retracted, 1), else_=0)))
                .group_by(register_changes.c.person_id)
                .having(func.sum(case((register_changes.c.change_type.in_(_STAY_STARTS), 1), else_=0)) > 0)
            )).all()
            # And how many retractions of their changes were reversed (hub/unretractions.py): a detention
            # reinstated owes again the notice its retraction withdrew (few rows: read whole).
            reversed_ = dict((await conn.execute(
                select(change_retraction_reversals.c.person_id, func.count())
                .group_by(change_retraction_reversals.c.person_id))).all())
            await conn.rollback()
        decided = 0
        for person_id, count, latest, retractions in people:
            fingerprint = (count, str(latest), int(retractions or 0), int(reversed_.get(person_id, 0)))
            settled = self._settled.get(person_id)
            if settled is not None and settled[0] == fingerprint and (settled[1] is None or today < settled[1]):
                continue
            decided += await self._scan_person(person_id, today, fingerprint)
        if decided:
            log.info("child notices decided", count=decided)
        return decided

    async def _scan_person(self, person_id: str, today: date,
                           fingerprint: tuple[int, str, int, int] | None = None) -> int:
        self._settled.pop(person_id, None)  # settled again only once this scan of them is through
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(register_changes.c.canonical).where(
                register_changes.c.person_id == person_id, not_retracted()))).all()
            history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
            # The person's own id, then each other person a notice about their changes may have gone under:
            # before a merge of two NHS numbers, the superseded person's (the retained person's now); while a
            # merge reversed since stood, the retained person's (the changes moved back are theirs again).
            person_ids = [person_id, *await notice_persons(conn, person_id)]
            due: dict[str, ChildNotice] = {}
            aliases: dict[str, list[str]] = {}  # a notice's id -> every id it may have been decided under
            notices = candidate_notices(history, today, self._ref)
            # What follows a notice that went: its stay's end (s85(4)), its withdrawal (a retraction, another
            # council concerned now), its correction (a stay begun by another detention since); and which
            # councils were told the stay already, or told and withdrawn (told anew when concerned again). Read
            # only for someone with an ending, a retraction (or one reversed: the change reinstated, its
            # notice withdrawn before) or more than one detention in their history.
            retractions = fingerprint[2] if fingerprint is not None else 1
            reinstated = fingerprint[3] if fingerprint is not None else 1
            if retractions or reinstated or any(c.change_type.value in _STAY_ENDS for c in history) \
                    or sum(c.change_type.value in _STAY_STARTS for c in history) > 1:
                notices = await self._following(conn, person_ids, history, today, retractions > 0, notices)
            for notice in notices:
                ids = event_ids_for(person_ids, notice)
                due[ids[0]], aliases[ids[0]] = notice, ids
            if due:
                decided_ids = await _decided(conn, [i for ids in aliases.values() for i in ids])
                due = {i: n for i, n in due.items() if decided_ids.isdisjoint(aliases[i])}
            details = None
            if due:  # the personal details only for someone owed a notice not yet decided
                stored = (await conn.execute(select(persons.c.details)
                                             .where(persons.c.person_id == person_id))).scalar_one()
                details = load_person_details(self._protector, stored)
            await conn.rollback()
        decided = 0
        settled = True
        if due and details is not None:
            birth = date.fromisoformat(details["birth_date"]) if details.get("birth_date") else None
            kept = owed(due.values(), birth, today)
            for event_id, notice in due.items():
                if notice not in kept:
                    continue  # not a child on the day it would be owed
                if notice.org_code is None:
                    settled = False  # scanned again (a reference data update may name the council)
                    if event_id not in self._unrouted:
                        self._unrouted.add(event_id)
                        log.warning("child notice owed with no council to tell: no ordinary residence and the "
                                    "hospital's council is not known, or the council named (of residence, of "
                                    "the hospital or of the EHC plan) was split since or succeeded by one "
                                    "without a GSS code yet and no successor is named", event_id=event_id,
                                    event_type=notice.event_type.value)
                    continue
                async with write_transaction(self._engine) as conn:
                    if await _decided(conn, aliases[event_id]):
                        continue  # another scan decided it since
                    queued = await self._share(conn, event_id, person_id, notice, details, today)
                decided += 1
                log.info("child notice decided", event_id=event_id, event_type=notice.event_type.value,
                         org_code=notice.org_code, queued=queued or 0)
        if settled and fingerprint is not None:
            self._settled[person_id] = (fingerprint, next_due(history, today))
        return decided

    async def _following(self, conn: Any, person_ids: list[str], history: list[RegisterChange], today: date,
                         any_retracted: bool, candidates: list[ChildNotice]) -> list[ChildNotice]:
        """`candidates` not told already (`unsent`: a council told the stay's notice and not withdrawn has
        it; one withdrawn and concerned again is told anew), then the leaving notices, withdrawals and
        corrections the notices that went to councils about the person (`person_ids`: theirs, then those of
        the persons merged into them) owe (hub/domain/children.py `leaving_notices`, `withdrawals`,
        `corrections`)."""
        person_id = person_ids[0]
        rows = (await conn.execute(  # in the order they went (a correction of a correction replaces it)
            select(disclosures.c.event_id, disclosures.c.event_type, disclosures.c.recipient_org)
            .where(disclosures.c.person_id.in_(person_ids), disclosures.c.decision == "allowed",
                   disclosures.c.event_type.in_(_TOLD_TYPES))
            .group_by(disclosures.c.event_id, disclosures.c.event_type, disclosures.c.recipient_org)
            .order_by(func.min(disclosures.c.disclosure_id)))).all()
        if not rows:
            return candidates
        retracted: dict[str, RegisterChange] = {}
        if any_retracted:  # the detentions and endings retracted, read on purpose
            for r in (await conn.execute(including_retracted(
                    select(register_changes.c.canonical).where(
                        register_changes.c.person_id == person_id,
                        register_changes.c.change_type.in_(_STAY_STARTS + _STAY_ENDS),
                        register_changes.c.change_id.in_(select(change_retractions.c.change_id)
                                                         .where(change_retractions.c.person_id == person_id)))))
                      ).all():
                change = from_jsonable(RegisterChange, r.canonical)
                retracted[change.change_id] = change
        told = told_notices(person_ids, rows, [*history, *retracted.values()])
        return [*unsent(candidates, history, told, retracted),
                *leaving_notices(history, told, today, self._ref, retracted),
                *withdrawals(history, told, retracted, self._ref), *corrections(history, told, retracted, self._ref)]

    async def _share(self, conn: Any, event_id: str, person_id: str, notice: ChildNotice,
                     details: dict[str, Any], today: date) -> int | None:
        org = notice.org_code
        assert org is not None
        event_type = notice.event_type.value
        decision = self._sharing.decide(org, event_type, today)
        groups = decision.field_groups & NOTICE_GROUPS
        message_id = message_id_for(event_id, org)

        def payload() -> bytes:
            bundle = build_notice_message(notice, person_id, details, org=self._org(org, today),
                                          message_id=message_id, include=groups, ref=self._ref,
                                          source_endpoint=self._hub_endpoint, today=today, ns=self._ns)
            return self._protector.encrypt(orjson.dumps(bundle))

        return await queue.share(conn, org=org, decision=decision, event_id=event_id, event_type=event_type,
                                 message_id=message_id, payload=payload, correlation_id=uuid4(),
                                 person_id=person_id, channels=CHANNELS, field_groups=groups)

    def _org(self, code: str, today: date) -> Org:
        found = self._ref.council(code, today)
        return found if found is not None else Org(code=code, name=code, kind="council")


def told_notices(person_ids: str | Sequence[str], rows: list[Any], changes: list[RegisterChange]) -> list[Told]:
    """The notices that went (`rows`: `allowed` disclosures' event id, type and council, in the order
    they went), each matched to the stay it was about by its event id (`event_ids_for`): under one of
    `person_ids` (the person's, and those of the persons merged into them: a merge moved their history
    here), a detention of `changes` (the history and its retracted changes) it was decided under and, for
    a leaving notice, the change that ended the stay; a correction to the notice it corrected and the
    detention it told. A row matching none (a merge reversed since moved the history away) is left out."""
    pids = [person_ids] if isinstance(person_ids, str) else list(person_ids)
    starts = [c.change_id for c in changes if c.change_type.value in _STAY_STARTS]
    ends = [c.change_id for c in changes if c.change_type.value in _STAY_ENDS]
    out: list[Told] = []
    for event_id, event_type, org in rows:
        kind = EventType(event_type)
        if kind is EventType.CHILD_NOTICE_CORRECTED:  # of a notice that went before it (so matched above)
            found = next(((t.event_id, start) for t in out if t.event_type in STAY_NOTICES for start in starts
                          if _correction_id(t.event_id, start) == event_id), None)
            if found is not None:
                out.append(Told(event_id, kind, org, found[1], corrects=found[0]))
            continue
        if kind is EventType.CHILD_NOTICE_WITHDRAWN:  # of a notice that went before it
            notice = next((t for t in out if t.event_type in STAY_NOTICES and _withdrawal_id(t.event_id) == event_id),
                          None)
            if notice is not None:
                out.append(Told(event_id, kind, org, notice.stay_change_id, withdraws=notice.event_id))
            continue
        # A notice told anew, after a withdrawal that went before it (of a notice to the same council).
        renewed = next((start for t in out if t.event_type is EventType.CHILD_NOTICE_WITHDRAWN and t.org_code == org
                        for start in starts if _renewal_id(t.event_id, start) == event_id), None)
        if renewed is not None:
            out.append(Told(event_id, kind, org, renewed))
            continue
        for person_id, start in ((p, s) for p in pids for s in starts):
            if kind is EventType.CHILD_LEFT_HOSPITAL_NOTICE:
                end = next((e for e in ends if _notice_id(person_id, start, event_type, org, e) == event_id), None)
                if end is not None:
                    out.append(Told(event_id, kind, org, start, end))
                    break
            elif _notice_id(person_id, start, event_type, org) == event_id:
                out.append(Told(event_id, kind, org, start))
                break
    return out


async def _decided(conn: Any, event_ids: list[str]) -> set[str]:
    return set((await conn.execute(select(disclosures.c.event_id).distinct()
                                   .where(disclosures.c.event_id.in_(event_ids)))).scalars())


def build_notice_message(notice: ChildNotice, person_id: str, details: dict[str, Any], *, org: Org,
                         message_id: str, include: frozenset[str], ref: ReferenceData, source_endpoint: str,
                         today: date, ns: Namespaces = DEFAULT_NAMESPACES,
                         sent_at: datetime | None = None) -> dict[str, Any]:
    """The notice's FHIR message to `org` (the hub's message shape, hub/fhir/messages.py), carrying only
    the groups of `include` that a notice may (`NOTICE_GROUPS`) and the S117-ChildNotice extension."""
    stay = notice.stay
    assert notice.basis is not None  # a notice with a council to tell has the basis it was found on
    # A withdrawal of a notice whose detention was recorded in error tells nothing of it again, nor one to a
    # council not concerned any more anything of the stay; one of a leaving retracted tells the stay as it
    # stands (going on, or ended by another change).
    told_stay = notice.reason not in (NoticeReason.ADMISSION_IN_ERROR, NoticeReason.ANOTHER_COUNCIL)
    code = stay.legal_status_code if told_stay else None
    legal = ref.legal_status(code) if code else None
    in_hospital = stay.left_on is None or stay.left_on > today
    qualifying = code if legal is not None and legal.s117_qualifying == "yes" else None
    # Only what the notice is about: the stay. No entitlement, responsible body or review of the person's.
    status = S117Status(
        person_id=person_id, as_of=today, entitled=False, entitlement=Determination(None, "", ""),
        detained=in_hospital, in_hospital=in_hospital, qualifying_section_code=qualifying,
        detention_start=stay.admitted_on if told_stay else None)
    event = DomainEvent(event_type=notice.event_type, person_id=person_id, change_id=stay.change.change_id,
                        occurred_on=notice.occurred_on, summary=summary(notice))
    if not told_stay:
        include = include - {LEGAL_STATUS}
    patient = PatientDetails(
        nhs_number=details["nhs_number"], given_name=details.get("given_name") or "",
        family_name=details.get("family_name") or "",
        birth_date=date.fromisoformat(details["birth_date"]) if details.get("birth_date") else None)
    bundle = build_event_message(
        event=event, status=status, change=stay.change, patient=patient, message_id=message_id,
        sent_at=sent_at or datetime.now(UTC), source_endpoint=source_endpoint, recipient=org,
        include=include & NOTICE_GROUPS, legal_status_display=legal.description if legal else None,
        hospital_ods=stay.hospital_ods, ns=ns)
    # The child's fields of the detention that began the stay, as they came in (the inbound Encounter's
    # extensions), only under the group they belong to (hub/sharing.py CHILD_FIELDS_GROUP).
    child_fields = told_stay and CHILD_FIELDS_GROUP in include
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "EpisodeOfCare":
            # Whether s117 would follow the detention, whether or not the child is in hospital now.
            resource["status"] = "planned" if qualifying is not None else "cancelled"
        elif resource["resourceType"] == "Encounter":
            if stay.left_on is not None and not in_hospital:
                resource["period"]["end"] = stay.left_on.isoformat()  # the stay ended (s85(4))
            if child_fields:
                resource.setdefault("extension", []).extend(_child_field_extensions(stay.change, ns))
    parts: list[dict[str, Any]] = [
        {"url": "reason", "valueCode": notice.reason.value},
        {"url": "basis", "valueCode": notice.basis.value},
    ]
    weeks = stay.change.expected_stay_weeks if child_fields else None
    if weeks is not None:
        parts.append({"url": "expectedStayWeeks", "valuePositiveInt": weeks})
    if notice.supersedes is not None:
        parts.append({"url": "supersedes", "valueString": notice.supersedes})
    parts.append({"url": "citation", "valueString": notice.citation})
    header = bundle["entry"][0]["resource"]
    header["extension"].append({"url": ns.extension("S117-ChildNotice"), "extension": parts})
    return bundle


def _child_field_extensions(change: RegisterChange, ns: Namespaces) -> list[dict[str, Any]]:
    """A detention's expected stay and EHC plan council as Encounter extensions (those it carries)."""
    out: list[dict[str, Any]] = []
    if change.expected_stay_weeks is not None:
        out.append({"url": ns.extension("S117-ExpectedStayWeeks"), "valuePositiveInt": change.expected_stay_weeks})
    if change.ehc_plan_la_gss:
        out.append({"url": ns.extension("S117-EhcPlanCouncil"),
                    "valueIdentifier": {"system": GSS_CODE_SYSTEM, "value": change.ehc_plan_la_gss}})
    return out


async def run_child_notice_scanner(scanner: ChildNoticeScanner, interval_seconds: float,
                                   stop: asyncio.Event) -> None:
    await every(interval_seconds, stop, scanner.run_once, log=log, failed="child notice scan failed")
