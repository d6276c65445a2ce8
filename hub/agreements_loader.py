"""Read contracts/area-agreements.yaml into the domain's AgreementBook.

Lives outside hub/domain because it parses YAML; the domain only sees the
resulting immutable AgreementBook.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from hub.sharing import YAML_LOADER

from hub.domain.agreements import (
    ENGLAND_DEFAULT_AREA,
    ENGLAND_DEFAULT_FUNDING,
    AgreementBook,
    AreaAgreement,
    EscalationStage,
    FundingAgreement,
    FundingChange,
    FundingKind,
    NeedTag,
)

_AREA_KEYS = {
    "name",
    "citation",
    "first_review_months",
    "review_interval_months",
    "new_placement_review_weeks",
    "nhs_england_for_prison_detentions",
    "acknowledgement_working_days",
    "reminder_working_days",
    "escalation",
    "council_escalation",
}
_STAGE_KEYS = {"name", "owner", "working_days", "citation"}


class AgreementsError(ValueError):
    """The agreements file does not say what the hub needs, or says it twice."""


def _basis_points(value: Any, where: str) -> int:
    try:
        percent = Decimal(str(value))
    except ArithmeticError as exc:
        raise AgreementsError(f"{where}: is not a percentage") from exc  # the value itself never said
    points = percent * 100
    if points != points.to_integral_value():
        raise AgreementsError(f"{where}: has more than two decimal places")
    return int(points)


def _area(raw: dict[str, Any], where: str, default_name: str) -> AreaAgreement:
    unknown = set(raw) - _AREA_KEYS
    if unknown:
        raise AgreementsError(f"{where}: unknown keys {sorted(unknown)}")
    values = {"name": default_name, **raw}
    # The dispute procedures, each optional (the hub's defaults otherwise):
    # `escalation` between NHS commissioners (Worcs 15.5), `council_escalation`
    # between councils (Worcs 4.3.4, 15.4), each read and checked alike.
    for key in ("escalation", "council_escalation"):
        if key in raw:
            values[key] = _stages(raw[key], f"{where}.{key}")
    try:
        return AreaAgreement(**values)
    except (TypeError, ValueError) as exc:
        # "field: reason" from the dataclass becomes "areas.X.field: reason".
        message = str(exc)
        sep = "." if message.split(":", 1)[0] in _AREA_KEYS else ": "
        raise AgreementsError(f"{where}{sep}{message}") from exc


def _stages(raw: Any, where: str) -> tuple[EscalationStage, ...]:
    if not isinstance(raw, list) or not raw:
        raise AgreementsError(f"{where}: must be a list of at least one stage")
    stages = []
    for index, stage in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(stage, dict):
            raise AgreementsError(f"{at}: must be a mapping with {sorted(_STAGE_KEYS)}")
        unknown = set(stage) - _STAGE_KEYS
        if unknown:
            raise AgreementsError(f"{at}: unknown keys {sorted(unknown)}")
        missing = _STAGE_KEYS - set(stage)
        if missing:
            raise AgreementsError(f"{at}.{sorted(missing)[0]}: is required")
        try:
            stages.append(EscalationStage(name=str(stage["name"]), owner=str(stage["owner"]),
                                          working_days=stage["working_days"], citation=str(stage["citation"])))
        except ValueError as exc:
            raise AgreementsError(f"{at}.{exc}") from exc
    return tuple(stages)


def _funding(raw: dict[str, Any], where: str) -> FundingAgreement:
    try:
        kind = FundingKind(raw["kind"])
        share = raw.get("council_share_percent", raw.get("joint_council_share_percent"))
        s17 = raw.get("s17_leave_commissioner_percent", 100)
        tags = tuple((str(need), NeedTag(tag)) for need, tag in (raw.get("need_tags") or {}).items())
        cohorts = tuple((str(cohort), _basis_points(share, f"{where}.cohort_council_share_percent"))
                        for cohort, share in (raw.get("cohort_council_share_percent") or {}).items())
        return FundingAgreement(
            kind=kind,
            name=str(raw.get("name", kind.value)),
            citation=str(raw.get("citation", "")),
            council_share_bp=None if share is None else _basis_points(share, where),
            s17_leave_commissioner_share_bp=_basis_points(s17, where),
            need_tags=tags,
            cohort_shares=cohorts,
        )
    except KeyError as exc:
        raise AgreementsError(f"{where}: missing {exc}") from exc
    except ValueError as exc:
        raise AgreementsError(f"{where}: {exc}") from exc


def agreements_from_mapping(document: dict[str, Any]) -> AgreementBook:
    default = document.get("default") or {}
    default_area = _area(default["area"], "default.area", "England default") if "area" in default else ENGLAND_DEFAULT_AREA
    default_funding = _funding(default["funding"], "default.funding") if "funding" in default else ENGLAND_DEFAULT_FUNDING
    areas = {
        str(gss): _area(raw or {}, f"areas.{gss}", str(gss))
        for gss, raw in (document.get("areas") or {}).items()
    }
    funding: dict[tuple[str, str], FundingAgreement] = {}
    funding_changes: dict[tuple[str, str], tuple[FundingChange, ...]] = {}
    for index, raw in enumerate(document.get("funding") or []):
        where = f"funding[{index}]"
        try:
            pair = (str(raw["council"]), str(raw["commissioner"]))
        except KeyError as exc:
            raise AgreementsError(f"{where}: missing {exc}") from exc
        if pair in funding:
            raise AgreementsError(f"{where}: a second agreement for {pair}")
        funding[pair] = _funding(raw, where)
        changes = []
        for j, change in enumerate(raw.get("changes") or []):
            cw = f"{where}.changes[{j}]"
            try:
                agreed = change["agreed"]
                changes.append(FundingChange(
                    effective_from=_date(change["effective_from"], f"{cw}.effective_from"),
                    agreement=_funding({**raw, **change}, cw),
                    council_agreed_on=_date(agreed["council"], f"{cw}.agreed.council"),
                    commissioner_agreed_on=_date(agreed["commissioner"], f"{cw}.agreed.commissioner"),
                    reference=str(agreed.get("reference", "")),
                ))
            except KeyError as exc:
                raise AgreementsError(f"{cw}: missing {exc} (a change needs both bodies' agreement, "
                                      "Worcs 8.5)") from exc
            except (TypeError, ValueError) as exc:
                raise AgreementsError(f"{cw}: {exc}") from exc
        if changes:
            funding_changes[pair] = tuple(changes)
    try:
        return AgreementBook(areas=areas, funding=funding, default_area=default_area,
                             default_funding=default_funding, funding_changes=funding_changes)
    except ValueError as exc:
        raise AgreementsError(f"funding: {exc}") from exc


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise AgreementsError(f"{where}: is not an ISO date") from exc


def parse_agreements(data: bytes, name: str) -> AgreementBook:
    """The agreements file's bytes (`name`: the file's, for the error), checked as at start. An
    error names where (the entry and field, or the YAML's line and column), never the file's text:
    the YAML parser's own message quotes it (a reload's refusal is logged: hub/agreements_watch.py)."""
    try:
        document = yaml.load(data.decode("utf-8"), Loader=YAML_LOADER) or {}  # noqa: S506 - a safe loader
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise AgreementsError(f"{name}: cannot be read as YAML ({type(exc).__name__}{at})") from exc
    if not isinstance(document, dict):
        raise AgreementsError(f"{name}: expected a mapping at the top level")
    try:
        return agreements_from_mapping(document)
    except AgreementsError:
        raise
    except (AttributeError, TypeError) as exc:  # a section of the wrong shape (a list for a mapping, ...)
        raise AgreementsError(f"{name}: a section is not of the expected shape ({type(exc).__name__})") from exc


def load_agreements(path: str | Path) -> AgreementBook:
    path = Path(path)
    return parse_agreements(path.read_bytes(), str(path))
