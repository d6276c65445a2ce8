"""Outside review (session 30): the NHS commissioner after a re-detention in the earlier Who Pays eras.

The domain (s117-domain.md "NHS commissioner"; Bucks "Responsible
Commissioner"): the commissioner already responsible stays responsible
through further detentions "at 1 Sept 2020, or at any later re-detention"
(Worcs 4.4.2, 4.4.9), and before that era the discharge date decides: a
person discharged between 1 April 2013 and 31 March 2016 is the CCG's "where
the patient is discharged into ... and registers with a GP" (August 2013 Who
Pays). The hub kept the earlier commissioner through every re-detention,
citing Worcs 4.4.2 / 4.4.9 for a 2015 discharge, five years before that
paragraph's date.
"""

from hub.domain.model import ChangeType
from tests.unit.domain.builders import change, detained, left, moved, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE, HARROW, HARROW_PRACTICE, HW_CCG, NWL_CCG, OXON_CCG, OXON_PRACTICE, WORCESTERSHIRE,
    WORCS_PRACTICE,
)


def _redetained(first_left: str, detained_again: str, left_again: str) -> list:
    """Oxfordshire GP; discharged to Worcestershire with a Worcestershire GP; later moves to Harrow, registers
    with a Harrow GP, is detained again under s3 and discharged to Harrow."""
    return [
        detained("2012-06-01", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=OXON_PRACTICE),
        left(first_left, discharge_destination_la_gss=WORCESTERSHIRE, gp_practice_ods=WORCS_PRACTICE),
        moved("2013-09-01", HARROW, gp_practice_ods=HARROW_PRACTICE),
        detained(detained_again),
        left(left_again, discharge_destination_la_gss=HARROW),
    ]


def test_a_re_detention_discharged_between_april_2013_and_march_2016_takes_the_discharge_areas_ccg():
    history = _redetained("2013-06-01", "2015-01-10", "2015-03-01")
    first = status(history[:2], "2013-07-01").responsible_commissioner
    assert first.org.code == HW_CCG and "1 April 2013 - 31 March 2016" in first.citation
    # While detained again the CCG responsible keeps it; the 2015 discharge decides (August 2013 Who Pays).
    assert status(history[:4], "2015-02-01").responsible_commissioner.org.code == HW_CCG
    result = status(history, "2015-03-02")
    assert result.commissioner_basis_code == NWL_CCG
    assert "1 April 2013 - 31 March 2016" in result.responsible_commissioner.citation
    assert "Worcs 4.4.2" not in result.responsible_commissioner.citation


def test_outside_2013_2016_a_re_detention_keeps_the_commissioner():
    # Discharged pre April 2013: the legacy/originating CCG continues for subsequent admissions (Bucks).
    legacy = [detained("2012-06-01", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=OXON_PRACTICE),
              left("2013-02-01"), moved("2013-09-01", HARROW, gp_practice_ods=HARROW_PRACTICE),
              detained("2016-06-01"), left("2016-08-01", discharge_destination_la_gss=HARROW)]
    assert status(legacy, "2016-08-02").commissioner_basis_code == OXON_CCG
    # Re-detained after 1 September 2020: kept (Worcs 4.4.2, 4.4.9), whatever the earlier era.
    later = _redetained("2013-06-01", "2021-01-10", "2021-03-01")
    kept = status(later, "2021-03-02").responsible_commissioner
    assert status(later, "2021-03-02").commissioner_basis_code == HW_CCG
    assert "Worcs 4.4.2, 4.4.9" in kept.citation


def test_a_gp_change_during_the_re_detention_is_the_one_registered_with_on_discharge():
    history = _redetained("2013-06-01", "2015-01-10", "2015-03-01")
    history.insert(4, change(ChangeType.GP_CHANGED, "2015-02-20", gp_practice_ods=WORCS_PRACTICE))
    assert status(history, "2015-03-02").commissioner_basis_code == HW_CCG
