"""The YAML agreements loader (outside the domain) and the example contracts file."""

from pathlib import Path

import pytest

from hub.agreements_loader import AgreementsError, agreements_from_mapping, load_agreements
from hub.domain.agreements import FundingKind, NeedTag

EXAMPLE = Path(__file__).parents[3] / "contracts" / "area-agreements.yaml"


def test_example_file_has_the_four_agreements():
    book = load_agreements(EXAMPLE)
    assert book.funding_for("E10000034", "QGH").council_share_bp == 6_000
    bucks = book.funding_for("E06000060", "QU9")
    assert (bucks.kind, bucks.council_share_bp) == (FundingKind.ALIGNED_BUDGET, 5_393)
    harrow = book.funding_for("E09000015", "QRV")
    assert harrow.kind is FundingKind.NEEDS_MATRIX and ("rent", NeedTag.NOT_S117) in harrow.need_tags
    assert book.default_funding.council_share_bp == 5_000
    assert book.area("E06000060").new_placement_review_weeks == 12
    assert book.area("E99999999") == book.default_area


def test_every_agreement_in_the_example_cites_its_source():
    book = load_agreements(EXAMPLE)
    for agreement in [*book.funding.values(), book.default_funding]:
        assert agreement.citation


@pytest.mark.parametrize("document", [
    {"funding": [{"council": "E1", "commissioner": "Q1", "kind": "fixed-split"}]},  # no share
    {"funding": [{"council": "E1", "kind": "fixed-split", "council_share_percent": 50}]},  # no commissioner
    {"funding": [{"council": "E1", "commissioner": "Q1", "kind": "whatever"}]},
    {"funding": [{"council": "E1", "commissioner": "Q1", "kind": "fixed-split", "council_share_percent": 50.123}]},
    {"funding": [{"council": "E1", "commissioner": "Q1", "kind": "fixed-split", "council_share_percent": 50}] * 2},
    {"areas": {"E1": {"review_interval_months": 18}}},
    {"areas": {"E1": {"review_every": 12}}},
])
def test_bad_documents_are_rejected(document):
    with pytest.raises(AgreementsError):
        agreements_from_mapping(document)


def test_empty_document_gives_england_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    book = load_agreements(path)
    assert book.default_funding.council_share_bp == 5_000


# --- transfers and disputes (hub/domain/workflows) --------------------------------
import pytest as _pytest  # noqa: E402

from hub.agreements_loader import AgreementsError as _AgreementsError, agreements_from_mapping as _from  # noqa: E402


def test_acknowledgement_period_and_escalation_stages_load_per_area():
    from hub.settings import REPO_ROOT
    from hub.agreements_loader import load_agreements

    book = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
    assert book.default_area.acknowledgement_working_days == 10
    assert [s.owner for s in book.area("E06000060").escalation] == ["JMG", "ICET"]
    assert [s.owner for s in book.area("E10000034").escalation] == ["lead-body", "ICS", "NHS England"]


@_pytest.mark.parametrize(("area", "names"), [
    ({"acknowledgement_working_days": 0}, "areas.X.acknowledgement_working_days"),
    ({"acknowledgement_working_days": 5, "reminder_working_days": 5}, "areas.X.reminder_working_days"),
    ({"escalation": []}, "areas.X.escalation"),
    ({"escalation": [{"name": "JMG", "owner": "JMG", "working_days": "soon", "citation": "x"}]},
     "areas.X.escalation[0].working_days"),
    ({"escalation": [{"name": "JMG", "owner": "JMG", "working_days": 5}]}, "areas.X.escalation[0].citation"),
    ({"escalation": [{"name": "JMG", "owner": "JMG", "working_days": 5, "citation": "x", "colour": 1}]},
     "areas.X.escalation[0]: unknown keys"),
])
def test_bad_workflow_settings_name_the_field(area, names):
    with _pytest.raises(_AgreementsError) as bad:
        _from({"areas": {"X": area}})
    assert str(bad.value).startswith(names)
