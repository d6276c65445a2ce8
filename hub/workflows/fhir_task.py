"""Each transfer and each dispute stage as a FHIR R4 Task, built as dicts.

Task.status: a transfer awaiting acknowledgement (or overdue) is `requested`,
accepted `accepted`, contested `rejected`, withdrawn by the hub (later history
shows responsibility did not change hands, or that the hand-over is on another
date: superseded by the case for that date) `cancelled`, with that reason as
`statusReason`; the current stage of an open
dispute is `in-progress`, a resolved one (and a stage left by escalation)
`completed`, one withdrawn by the hub (the source's dispute-raised change
that opened it was retracted as recorded in error) `cancelled`, with that
reason as `statusReason`. `owner` is the clock's owner, `restriction.period` the clock,
`focus` the person's s117 EpisodeOfCare; `businessStatus` the hub's state.
In a message the Task joins the Bundle (field group "workflow") with focus and
`for` pointing at the message's EpisodeOfCare and Patient entries.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from hub.fhir.namespaces import (
    DEFAULT_NAMESPACES,
    HUB_FHIR_BASE,
    HUB_PERSON_ID_SYSTEM,
    Namespaces,
    org_identifier_system,
)
from hub.fhir.messages import WORKFLOW
from hub.domain.workflows.model import (
    DISPUTE_REOPENED_REASON,
    DISPUTE_WITHDRAWN_REASON,
    SUPERSEDED_REASON,
    WITHDRAWN_REASON,
    Case,
    CaseKind,
    DisputeState,
    TransferState,
)
from hub.ids import uuid5

CASE_ID_SYSTEM = f"{HUB_FHIR_BASE}/Id/workflow-case"
TASK_NAMESPACE = uuid.UUID("b3c1a7e2-6f0d-4c55-9e1a-117117117a5c")
_GSS = re.compile(r"^[EWSN][0-9]{8}$")
_ODS = re.compile(r"^[A-Z0-9]{3,6}$")

TRANSFER_STATUS = {
    TransferState.AWAITING: "requested",
    TransferState.OVERDUE: "requested",
    TransferState.ACCEPTED: "accepted",
    TransferState.CONTESTED: "rejected",
    TransferState.WITHDRAWN: "cancelled",  # FHIR R4: "the task was not completed" (nobody need act now)
}


def task_id(case: Case) -> str:
    """One Task per transfer (the case id), one per dispute stage (`<case id>-stage-<n>`)."""
    return f"{case.case_id}-stage-{case.stage_index}" if case.kind is CaseKind.DISPUTE else case.case_id


def parse_task_id(value: str) -> tuple[str, int | None]:
    """(case id, stage index or None) from a Task id."""
    case_id, sep, stage = value.partition("-stage-")
    return (case_id, int(stage)) if sep and stage.isdigit() else (value, None)


def _body_ref(code: str) -> dict[str, Any]:
    if _GSS.match(code):
        return {"identifier": {"system": org_identifier_system("council"), "value": code}, "display": code}
    if _ODS.match(code):
        return {"identifier": {"system": org_identifier_system("icb"), "value": code}, "display": code}
    return {"display": code}  # a named level of an area's procedure ("ICS", "JMG")


def build_task(case: Case, *, focus: dict[str, Any] | None = None, subject: dict[str, Any] | None = None,
               last_modified: str | None = None) -> dict[str, Any]:
    if case.kind is CaseKind.TRANSFER:
        status = TRANSFER_STATUS[TransferState(case.state)]
        code_text = f"S117 transfer of {case.role} responsibility"
        description = f"{case.role} responsibility moves from {case.outgoing} to {case.incoming} ({case.basis})"
        requester = case.outgoing
    else:
        stage = case.stages[case.stage_index]
        status = {DisputeState.RESOLVED: "completed", DisputeState.WITHDRAWN: "cancelled"}.get(
            DisputeState(case.state), "in-progress")
        code_text = f"S117 {case.dispute_kind} dispute: {stage.name}"
        description = f"dispute between {', '.join(case.parties)} at '{stage.name}' ({stage.citation})"
        requester = case.raised_by if case.raised_by in case.parties else None
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id(case),
        "identifier": [{"system": CASE_ID_SYSTEM, "value": case.case_id}],
        "status": status,
        "businessStatus": {"text": case.state},
        "intent": "order",
        "code": {"text": code_text},
        "description": description,
        "focus": focus or {"identifier": {"system": HUB_PERSON_ID_SYSTEM, "value": case.person_id},
                           "display": "s117 aftercare episode of the person"},
        "for": subject or {"identifier": {"system": HUB_PERSON_ID_SYSTEM, "value": case.person_id}},
        "authoredOn": case.opened_on.isoformat(),
    }
    if last_modified:
        task["lastModified"] = last_modified
    if requester:
        task["requester"] = _body_ref(requester)
    if case.clock is not None:
        task["owner"] = _body_ref(case.clock.owner)
        task["restriction"] = {"period": {"start": case.clock.started_on.isoformat(),
                                          "end": case.clock.due_on.isoformat()}}
    elif case.kind is CaseKind.TRANSFER and case.incoming:
        task["owner"] = _body_ref(case.incoming)
    elif case.responsible:
        task["owner"] = _body_ref(case.responsible)
    if case.kind is CaseKind.TRANSFER and case.state == TransferState.WITHDRAWN:
        # The hub's words, not a body's: carried in messages too (a contest's reason is not).
        task["statusReason"] = {"text": SUPERSEDED_REASON if case.superseded_by_handover_on is not None
                                else WITHDRAWN_REASON}
    elif case.kind is CaseKind.DISPUTE and case.state == DisputeState.WITHDRAWN:
        task["statusReason"] = {"text": DISPUTE_WITHDRAWN_REASON}  # the hub's words, carried in messages too
    elif case.reason:
        task["statusReason"] = {"text": case.reason}
    notes = []
    if case.kind is CaseKind.DISPUTE and case.interims:
        interim = case.interims[-1]
        split = ", ".join(f"{org} {share / 100:g}%" for org, share in interim.shares)
        notes.append(f"interim: {interim.lead_body} leads; {split}; "
                     f"{'agreed' if interim.agreed else 'default until agreed'} ({interim.citation})")
    if case.responsible and case.responsible_from:
        notes.append(f"resolved: {case.responsible} responsible from {case.responsible_from.isoformat()}")
    if case.kind is CaseKind.DISPUTE and case.reopened_on is not None:
        notes.append(f"reopened on {case.reopened_on.isoformat()}: {DISPUTE_REOPENED_REASON}")
    if case.kind is CaseKind.DISPUTE and case.withdrawn_on is not None:
        notes.append(f"withdrawn on {case.withdrawn_on.isoformat()}: the interim arrangements end")
    if case.merged_from is not None:
        notes.append("the person's NHS numbers were merged (PDS): the case is the retained person's")
    if case.merge_duplicates:
        notes.append("also open for the same bodies since the merge: case " + ", ".join(case.merge_duplicates)
                     + " (both kept: the parties close the one that does not stand)")
    if notes:
        task["note"] = [{"text": n} for n in notes]
    return task


def add_task(bundle: dict[str, Any], details: dict[str, str], include: frozenset[str],
             ns: Namespaces = DEFAULT_NAMESPACES) -> None:
    """Put the event's Task into a message Bundle if the recipient may see it."""
    entries = bundle["entry"]
    by_type = {e["resource"]["resourceType"]: e["fullUrl"] for e in entries}
    found = task_entry(bundle["id"], details, include, by_type.get("EpisodeOfCare", ""), by_type.get("Patient", ""), ns)
    if found is None:
        return
    full_url, task = found
    entries.append({"fullUrl": full_url, "resource": task})
    entries[0]["resource"]["focus"].append({"reference": full_url})


def task_entry(message_id: str, details: dict[str, str], include: frozenset[str], episode_url: str,
               patient_url: str, ns: Namespaces = DEFAULT_NAMESPACES) -> tuple[str, dict[str, Any]] | None:
    """The event's Task for message `message_id` (its fullUrl and resource), or
    None if the event has none or the recipient may not see it."""
    raw = details.get("task")
    if not raw or WORKFLOW not in include:
        return None
    task = orjson.loads(raw)
    task["meta"] = {"profile": [ns.profile("S117-Task")]}
    task["identifier"] = [{"system": f"{ns.fhir_base}/Id/workflow-case",
                           "value": task.get("identifier", [{}])[0].get("value", task.get("id", ""))}]
    task["focus"] = {"reference": episode_url}
    task["for"] = {"reference": patient_url}
    entry_id = uuid5(TASK_NAMESPACE, f"{message_id}/task")
    task["id"] = entry_id
    return f"urn:uuid:{entry_id}", task
