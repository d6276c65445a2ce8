"""Policy paragraphs the rules cite, in one table so a citation is never retyped.

"Worcs" is the Worcestershire joint policy (2021), "Bucks" the Buckinghamshire
protocol v9.2 (quoted by its heading, it has no paragraph numbers), "FOI" the
CCG's answers to the s117 funding questionnaire, "Harrow" the Harrow matrix
report. Files are in the shared policy-sources folder.
"""

from __future__ import annotations

QUALIFYING_SECTIONS = "Worcs 1.1, 3.3; Bucks 'S117 applies to'"
NOT_QUALIFYING = "Bucks 'S117 does not apply to'"
CPIA_ORDER = "Worcs 3.3 (s37 effect of a CP(I)A 1964 hospital order)"
S17_LEAVE = "Worcs 2.2, 8.4"
STAYED_INFORMALLY = "Worcs 5.5"
CTO_COVERED = "Worcs 2.2, 5.3"
# The Act itself, not a policy paragraph: what ends a CTO (hub/domain/rules/engine.py
# `_end_cto_by_new_detention`). An application for admission for treatment (s3)
# makes any previous Part II application under which the person was a community
# patient cease to have effect (s6(4)), as a hospital order does (s40(5); a
# hospital or transfer direction has a hospital order's effect: s45B(2), s47(3),
# s48(3)); a CTO stays in force only until that application ceases to have
# effect (s17C(c)). A recall (s17E) or a non-qualifying detention (s2 is an
# application for assessment) does not end it.
CTO_ENDED_BY_NEW_DETENTION = "MHA 1983 s6(4), s40(5), s17C(c)"
NO_LAPSE = "Worcs 5.6-5.8"
DIED = "Worcs 5.3 (duty lasts while needed)"

COUNCIL_RESIDENCE = "Worcs 4.3.1"
COUNCIL_UNCHANGED_BY_MOVES = "Worcs 4.3.3, 17.1"
COUNCIL_REDETENTION = "Worcs 4.3.3 (R (Worcestershire CC) v SSHSC [2021] EWHC 682)"
COUNCIL_NO_FIXED_ABODE = "Bucks 'If, exceptionally, no place of residence'"
COUNCIL_DISPUTE = "Worcs 4.3.4, 15.4"
COUNCIL_SUCCESSION = "council succession in the reference data"

NHS_ORIGINATING_2020 = "Worcs 4.4.1"
NHS_AT_1_SEPT_2020 = "Worcs 4.4.3"
NHS_ALREADY_RECEIVING = "Worcs 4.4.2, 4.4.9"
NHS_PRE_2013 = "Bucks 'Responsible Commissioner' (discharged pre 1 April 2013)"
NHS_2013_2016 = "Bucks 'Responsible Commissioner' (discharged 1 April 2013 - 31 March 2016)"
NHS_FROM_2016 = "Bucks 'Responsible Commissioner' (from 1 April 2016; County A / County B example)"
NHS_ENGLAND_PRISON = "Bucks 'NHS Commissioning Board (NHS England)'"
NHS_DISPUTE = "Worcs 4.4.8, 15.5, 15.6"
NHS_NOT_GP_FOLLOWING = "Worcs 4.4.6"

REVIEW_FIRST = "Worcs 14.1 (within 3 months of discharge)"
REVIEW_ANNUAL = "Worcs 14.1 (at least every 12 months)"
REVIEW_NEW_PLACEMENT = "Bucks 'SWIFT(AIS) would be used to flag reviews' (6-12 weeks)"
REVIEW_UNSCHEDULED = "Worcs 14.1 (unscheduled reviews)"
REVIEW_MOVE = "Worcs 14.1, 17.1"

DISCHARGE_JOINT = "Worcs 16.1; Bucks 'Discharge from s117'"
DISCHARGE_CTO = "Worcs 16.2"
DISCHARGE_REASONS_RECORDED = "Worcs 16.3; Bucks 'clearly recorded with details of who was involved'"
DISCHARGE_PERSON_INVOLVED = "Worcs 16.5; Bucks 'discussed with the service user'"
DISCHARGE_FORBIDDEN_GROUNDS = "Worcs 16.9; Bucks 'should not be taken away because'"
DISCHARGE_NOT_ENTITLED = "Worcs 19.4"

REGISTER_SERVICE_LEVEL = "Worcs 19.6"

FUNDING_WORCS_60_40 = "Worcs A2.1"
FUNDING_BUCKS_ALIGNED = "Bucks 'Aligned Budget Funding Split'"
FUNDING_HARROW_MATRIX = "Harrow matrix report, Section 2"
FUNDING_50_50 = "FOI Q2a; Harrow report (before the matrix)"
FUNDING_PANEL = "FOI Q1"
FUNDING_S17_LEAVE = "Worcs A2.4"
FUNDING_FNC = "FOI Q5; Worcs 10.1"
FUNDING_TOP_UP = "Worcs 8.3, 13.3"
FUNDING_NOT_S117 = "Bucks 'Distinguishing between needs'"
FUNDING_NO_WITHDRAWAL = "Worcs 8.5"

# Transfers and disputes as workflows (hub/domain/workflows).
ESCALATION_WHO_PAYS = "Who Pays? 2020 Appendix 1; Worcs 15.5"
ESCALATION_BUCKS = "Bucks 'Management of Disputes'"
# Disputes between councils over ordinary residence follow the Care and Support
# (Disputes between Local Authorities) Regulations 2014, not Who Pays?: the
# Secretary of State determines them, never NHS England (Worcs 4.3.4, 15.4).
ESCALATION_LA_DISPUTES = "Worcs 4.3.4, 15.4 (Care and Support (Disputes between Local Authorities) Regulations 2014)"
TRANSFER_REDETENTION = "Worcs 4.3.3, 17.1"
TRANSFER_ACKNOWLEDGE = "Worcs 17.2 (responsibilities clearly set out and agreed)"
TRANSFER_CONTEST = "Worcs 4.3.4, 15.4; Who Pays? 2020 Appendix 1"
DISPUTE_NO_DELAY = "Worcs 15.1"
DISPUTE_COUNCIL_INTERIM = "Worcs 4.3.4"
DISPUTE_NHS_INTERIM = "Worcs 4.4.8, 15.6"
DISPUTE_RESOLVED_REIMBURSE = "Worcs 4.4.8, 15.6 (the body no longer deemed responsible is reimbursed)"
DISPUTE_HOLD = FUNDING_NO_WITHDRAWAL
FUNDING_UNIVERSAL = "FOI Q4"
FUNDING_EXCEPTION = "Worcs A2.2, A2.3"
FUNDING_COHORT = "FOI Q2a"
FUNDING_AGREED_CHANGE = "Worcs 8.5, A2.3"
FUNDING_BUDGET_MONITORING = "Worcs 18.2; Worcs Annex 3"
