"""The transfer and dispute state machines, as tables.

TRANSFER_RULES and DISPUTE_RULES say, for each (state, action), the state it
leads to, which roles may take it, and the paragraph it rests on. A pair not
in a table is illegal (409). A caller that is not a party gets 403 here (the
API answers 404 so as not to confirm the case exists); a party in the wrong
role gets 403; bad terms get 422.

A dispute is resolved by the parties' agreement (every party agrees the same
outcome: one proposes, the others send the same terms, the last agreement
resolves; Worcs 15.5 local resolution, 4.4.8 / 15.6 the commissioners must
agree) or by the determination of the body that owns the final stage of the
case's procedure, recorded for it by the hub operator; or by a source
recording the outcome on the register. One party never resolves alone.

The procedure is the dispute's kind's (`AreaAgreement.escalation_for`), fixed
on the case when it is raised (`Case.stages`): between NHS commissioners the
area's `escalation` (Who Pays? 2020: director level -> ICS -> arbitration by
NHS England, Worcs 15.5; Bucks: JMG -> ICET); between councils its
`council_escalation` (the Care and Support (Disputes between Local
Authorities) Regulations 2014: local resolution led by the lead authority,
then the Secretary of State's determination, Worcs 4.3.4, 15.4), never NHS
England's arbitration nor an area's NHS procedure. An overdue transfer is
escalated to the first stage of its role's procedure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta

from hub.domain import citations
from hub.domain.agreements import LEAD_BODY, AreaAgreement, EscalationStage
from hub.domain.working_days import add_working_days
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    DETERMINATION_ACTOR,
    DISPUTE_REOPENED_REASON,
    DISPUTE_WITHDRAWN_REASON,
    REGISTER_ACTOR,
    SUPERSEDED_REASON,
    WHOLE,
    WITHDRAWN_REASON,
    Action,
    Actor,
    Case,
    CaseKind,
    Clock,
    DisputeState,
    Interim,
    Resolution,
    Transition,
    TransferState,
    WorkflowRefusal,
)

# What the parties of a dispute raised through the API must be.
PARTY_KIND = {"council": "Worcs 4.3.4, 15.4 (a dispute between local authorities)",
              "commissioner": "Worcs 4.4.8, 15.5 (a dispute between CCGs / ICBs)"}
# The policy paragraphs the resolution rules rest on (the area's stages carry their own).
RESOLUTION_BY_AGREEMENT = ("Worcs 15.5 (local resolution), 4.4.8, 15.6 (the commissioners must agree); "
                           "Worcs 4.3.4, 15.4 (councils)")
RESOLUTION_BY_DETERMINATION = ("Worcs 15.5 (arbitration by NHS England), 15.4 (councils: the 2014 Disputes "
                               "Regulations' process)")
# The same, for one kind of dispute: a council dispute's determination is the
# Secretary of State's under the 2014 Regulations, never NHS England's.
DETERMINATION_BY_KIND = {"council": "Worcs 4.3.4, 15.4 (councils: determined under the 2014 Disputes Regulations)",
                         "commissioner": "Worcs 15.5 (arbitration by NHS England)"}


# A dispute reopened by the hub: the source's dispute-resolved change that
# resolved it was retracted as recorded in error, so no outcome stands; what the
# parties were told is put right, and the current arrangements hold again while
# it is open (Worcs 8.5).
DISPUTE_REOPENED = ("UK GDPR Art. 16, 19 (the dispute-resolved change retracted as recorded in error; rectification "
                    f"told to each recipient); {citations.DISPUTE_HOLD} while the dispute is open")


def _determination_citation(case: Case) -> str:
    return DETERMINATION_BY_KIND.get(case.dispute_kind or "", RESOLUTION_BY_DETERMINATION)
# A transfer withdrawn by the hub: the rule that moved responsibility does not
# on the history as later corrected, and what the bodies were told is put right.
TRANSFER_WITHDRAWN = (f"{citations.TRANSFER_REDETENTION} (no such hand-over on the corrected history); "
                      "UK GDPR Art. 16, 19 (rectification told to each recipient)")
# A dispute withdrawn by the hub: the register change that raised it was
# retracted as recorded in error (hub/retraction.py); what the parties were
# told is put right, and the current arrangements it held (Worcs 8.5) no longer do.
DISPUTE_WITHDRAWN = ("UK GDPR Art. 16, 19 (the dispute-raised change retracted as recorded in error; rectification "
                     f"told to each recipient); {citations.DISPUTE_HOLD} no longer applies")


@dataclass(frozen=True, slots=True)
class Rule:
    target: str
    actors: frozenset[Actor]
    citation: str


T, D, A = TransferState, DisputeState, Action

TRANSFER_RULES: dict[tuple[str | None, Action], Rule] = {
    (None, A.OPEN): Rule(T.AWAITING, frozenset({Actor.REGISTER}), citations.TRANSFER_REDETENTION),
    (T.AWAITING, A.ACCEPT): Rule(T.ACCEPTED, frozenset({Actor.INCOMING}), citations.TRANSFER_ACKNOWLEDGE),
    (T.OVERDUE, A.ACCEPT): Rule(T.ACCEPTED, frozenset({Actor.INCOMING}), citations.TRANSFER_ACKNOWLEDGE),
    (T.AWAITING, A.CONTEST): Rule(T.CONTESTED, frozenset({Actor.INCOMING}), citations.TRANSFER_CONTEST),
    (T.AWAITING, A.BREACH): Rule(T.OVERDUE, frozenset({Actor.CLOCK}), citations.TRANSFER_ACKNOWLEDGE),
    # Later history shows the hand-over never happened, or happened on another
    # date: the hub withdraws the case, from any state not final, and from
    # accepted too (the acceptance was of a hand-over the history no longer
    # holds: both bodies are told, the acceptance stays in the case's history).
    # A contested case is left to the dispute its contest opened.
    (T.AWAITING, A.WITHDRAW): Rule(T.WITHDRAWN, frozenset({Actor.REGISTER}), TRANSFER_WITHDRAWN),
    (T.OVERDUE, A.WITHDRAW): Rule(T.WITHDRAWN, frozenset({Actor.REGISTER}), TRANSFER_WITHDRAWN),
    (T.ACCEPTED, A.WITHDRAW): Rule(T.WITHDRAWN, frozenset({Actor.REGISTER}), TRANSFER_WITHDRAWN),
}

DISPUTE_RULES: dict[tuple[str | None, Action], Rule] = {
    (None, A.RAISE): Rule(D.OPEN, frozenset({Actor.PARTY, Actor.REGISTER}), citations.DISPUTE_NO_DELAY),
    (D.OPEN, A.AGREE_INTERIM): Rule(D.OPEN, frozenset({Actor.PARTY}), citations.DISPUTE_NHS_INTERIM),
    (D.ESCALATED, A.AGREE_INTERIM): Rule(D.ESCALATED, frozenset({Actor.PARTY}), citations.DISPUTE_NHS_INTERIM),
    (D.OPEN, A.ESCALATE): Rule(D.ESCALATED, frozenset({Actor.PARTY, Actor.CLOCK}), citations.ESCALATION_WHO_PAYS),
    (D.ESCALATED, A.ESCALATE): Rule(D.ESCALATED, frozenset({Actor.PARTY, Actor.CLOCK}), citations.ESCALATION_WHO_PAYS),
    # The last stage's clock ran out: recorded as a breach, the state stays.
    (D.OPEN, A.BREACH): Rule(D.OPEN, frozenset({Actor.CLOCK}), citations.ESCALATION_WHO_PAYS),
    (D.ESCALATED, A.BREACH): Rule(D.ESCALATED, frozenset({Actor.CLOCK}), citations.ESCALATION_WHO_PAYS),
    # A party proposes an outcome, or agrees the one proposed; the state stays until every party agreed.
    (D.OPEN, A.AGREE_RESOLUTION): Rule(D.OPEN, frozenset({Actor.PARTY}), RESOLUTION_BY_AGREEMENT),
    (D.ESCALATED, A.AGREE_RESOLUTION): Rule(D.ESCALATED, frozenset({Actor.PARTY}), RESOLUTION_BY_AGREEMENT),
    # Resolved: by the last party's agreement (never by one party alone), by the final stage's
    # determination, or by a source recording the outcome on the register (dispute-resolved).
    (D.OPEN, A.RESOLVE): Rule(D.RESOLVED, frozenset({Actor.PARTY, Actor.DETERMINER, Actor.REGISTER}),
                              citations.DISPUTE_RESOLVED_REIMBURSE),
    (D.ESCALATED, A.RESOLVE): Rule(D.RESOLVED, frozenset({Actor.PARTY, Actor.DETERMINER, Actor.REGISTER}),
                                   citations.DISPUTE_RESOLVED_REIMBURSE),
    # Withdrawn by the hub alone: the source's dispute-raised change that
    # opened the case was retracted as recorded in error (never a party's act:
    # a party ends a dispute by agreement, hub/workflows/service.py `on_retracted`).
    (D.OPEN, A.WITHDRAW): Rule(D.WITHDRAWN, frozenset({Actor.REGISTER}), DISPUTE_WITHDRAWN),
    (D.ESCALATED, A.WITHDRAW): Rule(D.WITHDRAWN, frozenset({Actor.REGISTER}), DISPUTE_WITHDRAWN),
    # Reopened by the hub alone: the source's dispute-resolved change that
    # resolved it was retracted as recorded in error. Back to the stage it was
    # resolved at (open at the first, escalated at a later one: `reopen`); a
    # resolution by the parties' agreement or a determination is never undone
    # this way (the hub's own record of it cannot be retracted).
    (D.RESOLVED, A.REOPEN): Rule(D.OPEN, frozenset({Actor.REGISTER}), DISPUTE_REOPENED),
}

# Names for the illegal pairs callers meet most, so a refusal says what went wrong.
_ILLEGAL_NAMES = {
    (T.ACCEPTED, A.ACCEPT): "already-accepted",
    (T.CONTESTED, A.CONTEST): "already-contested",
    (T.CONTESTED, A.ACCEPT): "already-contested",
    (T.ACCEPTED, A.CONTEST): "already-accepted",
    (T.OVERDUE, A.CONTEST): "contest-after-deadline",
    (T.WITHDRAWN, A.ACCEPT): "transfer-withdrawn",
    (T.WITHDRAWN, A.CONTEST): "transfer-withdrawn",
    (T.WITHDRAWN, A.WITHDRAW): "already-withdrawn",
    (D.WITHDRAWN, A.REOPEN): "dispute-withdrawn",
    (D.OPEN, A.REOPEN): "not-resolved",
    (D.ESCALATED, A.REOPEN): "not-resolved",
}


def rules_for(kind: CaseKind) -> dict[tuple[str | None, Action], Rule]:
    return TRANSFER_RULES if kind is CaseKind.TRANSFER else DISPUTE_RULES


def _roles(case: Case, actor: str) -> frozenset[Actor]:
    if actor == CLOCK_ACTOR:
        return frozenset({Actor.CLOCK})
    if actor == REGISTER_ACTOR:
        return frozenset({Actor.REGISTER})
    if actor == DETERMINATION_ACTOR:
        return frozenset({Actor.DETERMINER})
    roles = set()
    if actor in case.parties:
        roles.add(Actor.PARTY)
    if actor == case.incoming:
        roles.add(Actor.INCOMING)
    if actor == case.outgoing:
        roles.add(Actor.OUTGOING)
    return frozenset(roles)


# A dispute's escalation and its clock's breach rest on the case's own
# procedure (its kind's: Who Pays? or the 2014 Disputes Regulations), not on
# the table's default citation.
_BY_PROCEDURE = frozenset({Action.ESCALATE, Action.BREACH})


def _procedure_citation(case: Case, action: Action) -> str | None:
    if case.kind is CaseKind.DISPUTE and action in _BY_PROCEDURE and case.stages:
        return case.stages[min(case.stage_index, len(case.stages) - 1)].citation
    return None


def _rule(case: Case, action: Action, actor: str) -> Rule:
    rules = rules_for(case.kind)
    rule = rules.get((case.state, action))
    procedure = _procedure_citation(case, action)
    if rule is not None and procedure is not None:
        rule = replace(rule, citation=procedure)
    roles = _roles(case, actor)
    if not roles:
        raise WorkflowRefusal(403, "not-a-party", "only the parties to a case may act on it",
                              citations.TRANSFER_ACKNOWLEDGE if case.kind is CaseKind.TRANSFER
                              else citations.DISPUTE_NHS_INTERIM)
    if rule is None:
        name = _ILLEGAL_NAMES.get((case.state, action))
        if name is None:
            name = "case-closed" if case.clock is None else "illegal-transition"
        # What this caller may do instead: never an action only the hub takes (a reopening, a withdrawal).
        legal = sorted(a.value for (s, a), r in rules.items() if s == case.state and r.actors & roles)
        if case.kind is CaseKind.DISPUTE and case.state == DisputeState.WITHDRAWN:
            raise WorkflowRefusal(409, "already-withdrawn" if action is Action.WITHDRAW else "dispute-withdrawn",
                                  f"a dispute case in state '{case.state}' cannot '{action.value}': it was withdrawn "
                                  f"by the hub ({DISPUTE_WITHDRAWN_REASON}); nothing is left to agree, escalate or "
                                  "resolve", DISPUTE_WITHDRAWN)
        if case.state == TransferState.WITHDRAWN:
            raise WorkflowRefusal(409, name, f"a {case.kind.value} case in state '{case.state}' cannot "
                                  f"'{action.value}': it was withdrawn by the hub ({WITHDRAWN_REASON}); "
                                  "nothing is left to accept or contest", TRANSFER_WITHDRAWN)
        raise WorkflowRefusal(409, name, f"a {case.kind.value} case in state '{case.state}' cannot '{action.value}'"
                              + (f"; it can: {', '.join(legal)}" if legal else "; it is closed"),
                              _citation_of(case, action))
    if not roles & rule.actors:
        who = " or ".join(sorted(a.value for a in rule.actors))
        raise WorkflowRefusal(403, f"{who.replace(' or ', '-or-')}-only",
                              f"'{action.value}' on a {case.kind.value} case is for the {who} body", rule.citation)
    return rule


def _citation_of(case: Case, action: Action) -> str:
    procedure = _procedure_citation(case, action)
    if procedure is not None:
        return procedure
    for (_, a), rule in rules_for(case.kind).items():
        if a == action:
            return rule.citation
    return ""


def _step(case: Case, after: Case, action: Action, actor: str, on: date, citation: str, why: str) -> tuple[Case, Transition]:
    return after, Transition(case.case_id, action, case.state, after.state, actor, on, citation, why)


# ----------------------------------------------------------------- transfers


def open_transfer(
    *, case_id: str, person_id: str, role: str, outgoing: str, incoming: str, on: date, basis: str,
    area: AreaAgreement, holidays: frozenset[date], decided_by_dispute: bool = False, opened_by_change: str = "",
    handover_on: date | None = None,
) -> tuple[Case, Transition]:
    """A rule moved `role` from `outgoing` to `incoming`: the incoming body
    must acknowledge within the area's period (working days, bank holidays).
    `opened_by_change`: the register change that told it; `handover_on`: the
    date of the hand-over in the history (the event's `occurred_on`)."""
    if outgoing == incoming:
        raise WorkflowRefusal(422, "same-body", "a transfer needs two different bodies", citations.TRANSFER_REDETENTION)
    base = Case(case_id=case_id, kind=CaseKind.TRANSFER, person_id=person_id, state="", parties=(outgoing, incoming),
                opened_on=on, area=area.name, clock=None, role=role, outgoing=outgoing, incoming=incoming, basis=basis,
                opened_by_change=opened_by_change, handover_on=handover_on)
    if decided_by_dispute:
        # A resolved dispute binds both bodies: nothing is left to acknowledge.
        after = replace(base, state=TransferState.ACCEPTED)
        return after, Transition(case_id, Action.OPEN, None, after.state, REGISTER_ACTOR, on,
                                 citations.DISPUTE_RESOLVED_REIMBURSE,
                                 f"{role} responsibility moved by a resolved dispute; binding on both bodies")
    due = add_working_days(on, area.acknowledgement_working_days, holidays)
    clock = Clock(owner=incoming, started_on=on, due_on=due,
                  purpose=f"accept or contest within {area.acknowledgement_working_days} working days",
                  citation=citations.TRANSFER_ACKNOWLEDGE)
    rule = TRANSFER_RULES[(None, Action.OPEN)]
    after = replace(base, state=rule.target, clock=clock)
    return after, Transition(case_id, Action.OPEN, None, after.state, REGISTER_ACTOR, on, basis or rule.citation,
                             f"{role} responsibility moves from {outgoing} to {incoming}; {incoming} to accept or "
                             f"contest by {due.isoformat()}")


def accept(case: Case, actor: str, on: date) -> tuple[Case, Transition]:
    rule = _rule(case, Action.ACCEPT, actor)
    late = case.clock is not None and on > case.clock.due_on
    after = replace(case, state=rule.target, clock=None)
    return _step(case, after, Action.ACCEPT, actor, on, rule.citation,
                 f"{actor} accepted {case.role} responsibility" + (" after the deadline" if late else ""))


def contest(case: Case, actor: str, on: date, reason: str) -> tuple[Case, Transition]:
    rule = _rule(case, Action.CONTEST, actor)
    if case.clock is not None and on > case.clock.due_on:
        raise WorkflowRefusal(409, "contest-after-deadline",
                              f"the acknowledgement period ended on {case.clock.due_on.isoformat()}; "
                              "accept, or raise a dispute through the escalation procedure", rule.citation)
    if not reason.strip():
        raise WorkflowRefusal(422, "reason-required", "a contest must give its reason", rule.citation)
    after = replace(case, state=rule.target, clock=None, reason=reason.strip())
    return _step(case, after, Action.CONTEST, actor, on, rule.citation,
                 f"{actor} contested {case.role} responsibility; a dispute opens")


def withdraw(case: Case, on: date, detail: str = "", actor: str = REGISTER_ACTOR,
             moved_to: date | None = None) -> tuple[Case, Transition]:
    """Later-arriving history shows the hand-over `case` was opened for did not
    happen: the hub withdraws it (a final state; the clock stops). `moved_to`:
    the history as corrected holds the same hand-over (role and bodies) on that
    other date, told by a case of its own, which supersedes this one. `detail`:
    what showed it, in the hub's words (no personal data). An accepted case is
    withdrawn too, saying so (its acceptance stays in its history)."""
    rule = _rule(case, Action.WITHDRAW, actor)
    after = replace(case, state=rule.target, clock=None, superseded_by_handover_on=moved_to)
    was = (f"{case.role} responsibility moves from {case.outgoing} to {case.incoming}"
           + (f" on {case.handover_on.isoformat()}" if case.handover_on is not None else ""))
    if moved_to is not None:
        why = (f"superseded by the hub: {SUPERSEDED_REASON} ({was} no longer; it moves on {moved_to.isoformat()} "
               "in the history as corrected)")
    else:
        why = (f"withdrawn by the hub: {WITHDRAWN_REASON} ({case.role} responsibility stays with {case.outgoing}, "
               f"not {case.incoming})")
    if case.state == TransferState.ACCEPTED:
        why += f"; it had been accepted by {case.incoming}, for the hand-over as the history then stood"
    return _step(case, after, Action.WITHDRAW, actor, on, rule.citation, why + (f"; {detail}" if detail else ""))


def transfer_breach(case: Case, on: date, area: AreaAgreement, actor: str = CLOCK_ACTOR) -> tuple[Case, Transition]:
    rule = _rule(case, Action.BREACH, actor)
    assert case.clock is not None
    if on <= case.clock.due_on:
        raise WorkflowRefusal(409, "clock-running", f"the deadline is {case.clock.due_on.isoformat()}", rule.citation)
    first = area.escalation_for(case.role)[0]
    # The incoming body still owns the (now breached) clock; the breach is
    # escalated to the area's first level.
    clock = replace(case.clock, purpose=f"overdue: accept, escalated to {first.name} ({first.owner})")
    after = replace(case, state=rule.target, clock=clock, breaches=(*case.breaches, "acknowledgement"))
    return _step(case, after, Action.BREACH, CLOCK_ACTOR, on, f"{rule.citation}; {first.citation}",
                 f"no answer from {case.incoming} by {case.clock.due_on.isoformat()}; escalated to {first.name}")


# ------------------------------------------------------------------ disputes


def _stage_clock(stage: EscalationStage, lead_body: str, on: date, holidays: frozenset[date]) -> Clock:
    owner = lead_body if stage.owner == LEAD_BODY else stage.owner
    return Clock(owner=owner, started_on=on, due_on=add_working_days(on, stage.working_days, holidays),
                 purpose=f"{stage.name}: resolve or escalate within {stage.working_days} working days",
                 citation=stage.citation)


def default_interim(kind: str, parties: tuple[str, ...], meeting_needs: str, on: date) -> Interim:
    """Before the parties agree: the council meeting the needs on the day keeps
    meeting them (Worcs 4.3.4); commissioners fund jointly (Worcs 4.4.8)."""
    lead = meeting_needs if meeting_needs in parties else parties[0]
    if kind == "council":
        shares = tuple((p, WHOLE if p == lead else 0) for p in parties)
        citation = citations.DISPUTE_COUNCIL_INTERIM
    else:
        each, rest = divmod(WHOLE, len(parties))
        shares = tuple((p, each + (rest if i == 0 else 0)) for i, p in enumerate(parties))
        citation = citations.DISPUTE_NHS_INTERIM
    return Interim(lead_body=lead, shares=shares, agreed=False, proposed_by="", from_date=on, citation=citation)


def raise_dispute(
    *, case_id: str, person_id: str, kind: str, parties: tuple[str, ...], raised_by: str, on: date, reason: str,
    meeting_needs: str, area: AreaAgreement, holidays: frozenset[date], dispute_id: str,
    transfer_case_id: str | None = None, kind_of: Callable[[str], str | None] | None = None,
) -> tuple[Case, Transition]:
    """`kind_of` (given when a body raises it through the API): the kind of
    body ("council", "commissioner") an org code is on the day, None if
    neither; every party must be of the dispute's kind."""
    parties = tuple(dict.fromkeys(parties))
    rule = DISPUTE_RULES[(None, Action.RAISE)]
    if len(parties) < 2:
        raise WorkflowRefusal(422, "two-parties", "a dispute needs at least two parties", rule.citation)
    if raised_by not in parties and raised_by != REGISTER_ACTOR:
        raise WorkflowRefusal(403, "not-a-party", "only a party may raise a dispute", rule.citation)
    if kind_of is not None:
        wrong = [p for p in parties if kind_of(p) != kind]
        if wrong:
            what = "a council (a current social services authority, by GSS code)" if kind == "council" else \
                "an NHS commissioner (a current ICB, or NHS England, by ODS code)"
            raise WorkflowRefusal(422, f"party-not-a-{kind}",
                                  f"every party to a {kind} dispute must be {what}: {', '.join(wrong)} is not",
                                  PARTY_KIND.get(kind, rule.citation))
    if not reason.strip():
        raise WorkflowRefusal(422, "reason-required", "a dispute must give its reason", rule.citation)
    interim = default_interim(kind, parties, meeting_needs, on)
    stages = area.escalation_for(kind)
    stage = stages[0]
    case = Case(case_id=case_id, kind=CaseKind.DISPUTE, person_id=person_id, state=rule.target, parties=parties,
                opened_on=on, area=area.name, clock=_stage_clock(stage, interim.lead_body, on, holidays),
                dispute_id=dispute_id, dispute_kind=kind, raised_by=raised_by, reason=reason.strip(),
                transfer_case_id=transfer_case_id, stages=stages, interims=(interim,))
    return case, Transition(case_id, Action.RAISE, None, case.state, raised_by, on, f"{rule.citation}; {interim.citation}",
                            f"{kind} dispute raised by {raised_by}; {interim.lead_body} leads meanwhile; "
                            f"first stage: {stage.name}")


def agree_interim(case: Case, actor: str, on: date, lead_body: str, shares: dict[str, int]) -> tuple[Case, Transition]:
    """A party proposes the lead body and the interim split; the same terms
    from another party make them agreed, in force from that day."""
    rule = _rule(case, Action.AGREE_INTERIM, actor)
    citation = citations.DISPUTE_COUNCIL_INTERIM if case.dispute_kind == "council" else citations.DISPUTE_NHS_INTERIM
    if lead_body not in case.parties:
        raise WorkflowRefusal(422, "lead-body-not-a-party", "lead_body must be one of the parties", citation)
    if set(shares) - set(case.parties):
        raise WorkflowRefusal(422, "share-for-non-party", "shares may name only the parties", citation)
    if any(not isinstance(v, int) or v < 0 for v in shares.values()) or sum(shares.values()) != WHOLE:
        raise WorkflowRefusal(422, "shares-must-total-100", "shares must be non-negative and total 100%", citation)
    terms = Interim(lead_body=lead_body, shares=tuple((p, shares.get(p, 0)) for p in case.parties), agreed=False,
                    proposed_by=actor, from_date=on, citation=citation)
    proposal = case.proposal
    if proposal is not None and proposal.proposed_by != actor and proposal.same_terms(terms):
        agreed = replace(terms, agreed=True, proposed_by=proposal.proposed_by)
        # The lead body convenes local resolution: a stage owned by the lead body follows it.
        clock = case.clock
        stage = case.stages[case.stage_index]
        if clock is not None and stage.owner == LEAD_BODY:
            clock = replace(clock, owner=lead_body)
        after = replace(case, interims=(*case.interims, agreed), proposal=None, clock=clock)
        why = f"interim terms agreed by {proposal.proposed_by} and {actor}: {lead_body} leads"
    else:
        after = replace(case, proposal=terms)
        why = f"{actor} proposed interim terms: {lead_body} leads; awaiting the other party"
    return _step(case, after, Action.AGREE_INTERIM, actor, on, citation, why)


def escalate(case: Case, actor: str, on: date, holidays: frozenset[date]) -> tuple[Case, Transition]:
    rule = _rule(case, Action.ESCALATE, actor)
    if case.stage_index + 1 >= len(case.stages):
        raise WorkflowRefusal(409, "no-further-stage",
                              f"'{case.stages[case.stage_index].name}' is the area's last stage", rule.citation)
    if actor == CLOCK_ACTOR and (case.clock is None or on <= case.clock.due_on):
        raise WorkflowRefusal(409, "clock-running", "the stage's clock has not run out", rule.citation)
    stage = case.stages[case.stage_index + 1]
    lead = case.interims[-1].lead_body
    breaches = (*case.breaches, case.stages[case.stage_index].name) if actor == CLOCK_ACTOR else case.breaches
    after = replace(case, state=rule.target, stage_index=case.stage_index + 1,
                    clock=_stage_clock(stage, lead, on, holidays), breaches=breaches)
    why = (f"stage '{case.stages[case.stage_index].name}' ran out of time" if actor == CLOCK_ACTOR
           else f"{actor} escalated") + f"; now at '{stage.name}' ({stage.owner})"
    return _step(case, after, Action.ESCALATE, actor, on, stage.citation, why)


def dispute_breach(case: Case, on: date, actor: str = CLOCK_ACTOR) -> tuple[Case, Transition]:
    """The last stage's clock ran out: nowhere left to escalate; a breach."""
    rule = _rule(case, Action.BREACH, actor)
    stage = case.stages[case.stage_index]
    if case.stage_index + 1 < len(case.stages):
        raise WorkflowRefusal(409, "escalate-instead", "a later stage exists: escalate", rule.citation)
    if case.clock is None or on <= case.clock.due_on or stage.name in case.breaches:
        raise WorkflowRefusal(409, "clock-running", "the stage's clock has not run out", rule.citation)
    after = replace(case, breaches=(*case.breaches, stage.name))
    return _step(case, after, Action.BREACH, CLOCK_ACTOR, on, stage.citation,
                 f"the last stage '{stage.name}' ran out of time")


def withdraw_dispute(case: Case, on: date, detail: str = "", actor: str = REGISTER_ACTOR) -> tuple[Case, Transition]:
    """The source's dispute-raised change that opened `case` was retracted as
    recorded in error: the hub withdraws the dispute (a final state). Its
    clock stops, an outcome or interim terms proposed and not yet agreed
    lapse, and its agreed interim arrangements end the day before `on`
    (`withdrawn_on`); they stay in its history. `detail`: what was retracted,
    in the hub's words (no personal data)."""
    rule = _rule(case, Action.WITHDRAW, actor)
    after = replace(case, state=rule.target, clock=None, proposal=None, resolution=None, withdrawn_on=on)
    stage = case.stages[case.stage_index] if case.stages else None
    why = f"withdrawn by the hub: {DISPUTE_WITHDRAWN_REASON}"
    if stage is not None:
        why += f" (it was at '{stage.name}')"
    if any(i.agreed for i in case.interims):
        why += f"; its interim arrangements end on {(on - timedelta(days=1)).isoformat()}"
    return _step(case, after, Action.WITHDRAW, actor, on, rule.citation, why + (f"; {detail}" if detail else ""))


def reopen(case: Case, on: date, holidays: frozenset[date], detail: str = "",
           actor: str = REGISTER_ACTOR) -> tuple[Case, Transition]:
    """The source's dispute-resolved change that resolved `case`
    (`resolved_by_change`) was retracted as recorded in error: the hub reopens
    the dispute at the stage it was resolved at (open at the first stage,
    escalated at a later one), with that stage's clock started again on `on`
    (the days it stood resolved are not the parties' delay). The outcome is
    gone (`responsible`, `responsible_from`, `resolved_on`); its agreed interim
    arrangements are in force again (they ended the day before the
    resolution: money, hub/domain/money/responsibility.py `interim_spans`),
    the current arrangements held while it is open (Worcs 8.5). The
    resolution stays in the case's history. `detail`: what was retracted, in
    the hub's words (no personal data)."""
    rule = _rule(case, Action.REOPEN, actor)
    if not case.resolved_by_change or not case.stages:
        raise WorkflowRefusal(409, "not-resolved-on-register",
                              "only a resolution a source recorded on the register is undone by retracting it",
                              rule.citation)
    stage = case.stages[case.stage_index]
    lead = case.interims[-1].lead_body if case.interims else case.parties[0]
    state = DisputeState.ESCALATED if case.stage_index > 0 else DisputeState.OPEN
    after = replace(case, state=state, responsible=None,
                    responsible_from=None, resolved_on=None, resolved_by_change="", determined_by="",
                    reopened_on=on)
    clock = _stage_clock(stage, lead, on, holidays)
    after = replace(after, clock=clock)
    resolved = f" on {case.resolved_on.isoformat()}" if case.resolved_on else ""
    why = (f"reopened by the hub: {DISPUTE_REOPENED_REASON} (resolved{resolved}: {case.responsible} responsible); "
           f"at '{stage.name}' again, to resolve or escalate by {clock.due_on.isoformat()}")
    return _step(case, after, Action.REOPEN, actor, on, rule.citation, why + (f"; {detail}" if detail else ""))


def _resolved(case: Case, rule: Rule, actor: str, on: date, responsible: str, responsible_from: date,
              citation: str, why: str, determined_by: str = "", by_change: str = "") -> tuple[Case, Transition]:
    after = replace(case, state=rule.target, clock=None, responsible=responsible,
                    responsible_from=responsible_from, resolved_on=on, proposal=None, resolution=None,
                    determined_by=determined_by, resolved_by_change=by_change)
    if case.dispute_kind == "council":
        citation = f"{citations.COUNCIL_DISPUTE}; {citation}"
    return _step(case, after, Action.RESOLVE, actor, on, citation,
                 f"resolved at '{case.stages[case.stage_index].name}': {responsible} responsible from "
                 f"{responsible_from.isoformat()}; {why}")


def resolve(case: Case, actor: str, on: date, responsible: str, responsible_from: date,
            determination: str = "", by_change: str = "") -> tuple[Case, Transition]:
    """Resolve, or move towards it, naming the body responsible from a date.

    A party: the first call proposes the outcome (agree-resolution, the state
    stays); each other party sending the same terms agrees it; the last
    agreement resolves. Different terms replace the proposal. A party that
    already agreed the terms standing is refused (409 awaiting-agreement):
    one party never resolves alone.
    The determination actor (the hub operator recording the final stage's
    determination, `determination` naming it): only at the area procedure's
    final stage, and only where that stage is owned by a body that is not the
    lead body (a party).
    The register (a source's dispute-resolved change, `by_change` its change
    id: a retraction of it reopens the case, `reopen`): resolves, as recorded."""
    rule = _rule(case, Action.RESOLVE, actor)
    if responsible not in case.parties:
        raise WorkflowRefusal(422, "responsible-not-a-party", "responsible must be one of the parties", rule.citation)
    if responsible_from > on:
        raise WorkflowRefusal(422, "responsible-from-in-future", "responsible_from must not be after today",
                              rule.citation)
    if actor == REGISTER_ACTOR:
        return _resolved(case, rule, actor, on, responsible, responsible_from, rule.citation,
                         "recorded on the register", by_change=by_change)
    stage = case.stages[case.stage_index]
    last = case.stages[-1]
    if actor == DETERMINATION_ACTOR:
        if case.stage_index + 1 < len(case.stages):
            raise WorkflowRefusal(409, "not-at-final-stage",
                                  f"a determination is made at the procedure's final stage, '{last.name}' "
                                  f"({last.owner}); the case is at '{stage.name}': the parties resolve it by "
                                  "agreement, or escalate", f"{last.citation}; {_determination_citation(case)}")
        if stage.owner == LEAD_BODY:
            raise WorkflowRefusal(409, "no-determining-body",
                                  f"the final stage '{stage.name}' is convened by the lead body, a party: there is "
                                  "no determination to record; the parties resolve it by agreement",
                                  f"{stage.citation}; {RESOLUTION_BY_AGREEMENT}")
        if not determination.strip():
            raise WorkflowRefusal(422, "determination-required",
                                  f"name the determination of {stage.owner} (its reference) being recorded",
                                  f"{stage.citation}; {_determination_citation(case)}")
        by = f"{stage.owner}: {determination.strip()}"[:300]
        return _resolved(case, rule, actor, on, responsible, responsible_from,
                         f"{stage.citation}; {rule.citation}", f"determined by {by}", determined_by=by)
    # A party: agreement.
    agreeing = DISPUTE_RULES[(case.state, Action.AGREE_RESOLUTION)]
    if determination:
        raise WorkflowRefusal(403, "determining-body-only",
                              f"a determination is recorded for the final stage's body ({last.owner}), not by a "
                              "party: a party proposes or agrees an outcome", f"{last.citation}; "
                              f"{_determination_citation(case)}")
    standing = case.resolution
    if standing is not None and standing.same_terms(responsible, responsible_from):
        if actor in standing.agreed_by:
            waiting = [p for p in case.parties if p not in standing.agreed_by]
            otherwise = "" if last.owner == LEAD_BODY else \
                f", or by the determination at the final stage '{last.name}' ({last.owner})"
            raise WorkflowRefusal(409, "awaiting-agreement",
                                  f"{actor} has agreed these terms already; a dispute is resolved when every party "
                                  f"agrees them (awaiting {', '.join(waiting)}){otherwise}", agreeing.citation)
        proposal = replace(standing, agreed_by=(*standing.agreed_by, actor))
        why = f"{actor} agreed the outcome {standing.proposed_by} proposed"
    else:
        proposal = Resolution(responsible=responsible, responsible_from=responsible_from, proposed_by=actor,
                              proposed_on=on, agreed_by=(actor,))
        why = f"{actor} proposed: {responsible} responsible from {responsible_from.isoformat()}"
        if standing is not None:
            why += f" (in place of {standing.proposed_by}'s {standing.responsible} from " \
                   f"{standing.responsible_from.isoformat()})"
    waiting = [p for p in case.parties if p not in proposal.agreed_by]
    if not waiting:
        return _resolved(case, rule, actor, on, responsible, responsible_from,
                         f"{agreeing.citation}; {rule.citation}",
                         f"agreed by every party ({', '.join(proposal.agreed_by)})")
    after = replace(case, resolution=proposal)
    return _step(case, after, Action.AGREE_RESOLUTION, actor, on, agreeing.citation,
                 f"{why}; awaiting {', '.join(waiting)}")
