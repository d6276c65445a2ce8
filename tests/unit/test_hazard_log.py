"""The clinical safety hazard log (docs/clinical-safety/hazard-log.yaml) stays true to the code.

Each hazard has the fields DCB0129 asks for, its risks follow the matrix in docs/clinical-safety/README.md,
and every control cites code that exists (the module imports, each dotted attribute is there) and tests that
exist (the file is there and defines the test function, or the class and its method): rename or remove
either and this fails, so the log cannot go stale silently."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "docs" / "clinical-safety" / "hazard-log.yaml"
README = ROOT / "docs" / "clinical-safety" / "README.md"

SEVERITIES = ("minor", "significant", "considerable", "major", "catastrophic")
LIKELIHOODS = ("very-low", "low", "medium", "high", "very-high")
# The DCB0129 clinical risk matrix: likelihood (rows) x severity (columns) -> risk rating 1-5.
MATRIX = {
    "very-high": (3, 4, 4, 5, 5),
    "high": (2, 3, 3, 4, 5),
    "medium": (2, 2, 3, 3, 4),
    "low": (1, 2, 2, 3, 4),
    "very-low": (1, 1, 2, 2, 3),
}
STATUSES = ("open", "mitigated", "gap-fixed")
HAZARD_KEYS = {"id", "title", "causes", "effects", "initial", "controls", "residual", "status"}
OPTIONAL_KEYS = {"finding", "actions", "deployer_actions"}
SYMBOL = re.compile(r"^[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*(?::[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")
TEST_REF = re.compile(r"^(tests/[\w/]+\.py)::([A-Za-z_]\w*)(?:::([A-Za-z_]\w*))?$")


def _load() -> dict[str, Any]:
    return yaml.safe_load(LOG.read_text(encoding="utf-8"))


HAZARDS = _load()["hazards"]


def rating(risk: dict[str, Any]) -> int:
    return MATRIX[risk["likelihood"]][SEVERITIES.index(risk["severity"])]


def _check_risk(where: str, risk: Any) -> list[str]:
    if not isinstance(risk, dict) or set(risk) != {"severity", "likelihood", "risk"}:
        return [f"{where}: needs severity, likelihood and risk"]
    if risk["severity"] not in SEVERITIES or risk["likelihood"] not in LIKELIHOODS:
        return [f"{where}: severity one of {SEVERITIES}, likelihood one of {LIKELIHOODS}"]
    if risk["risk"] != rating(risk):
        return [f"{where}: risk {risk['risk']} but the matrix gives {rating(risk)}"]
    return []


def schema_problems(log: dict[str, Any]) -> list[str]:
    """Every way `log` breaks the hazard log's schema (empty: none)."""
    problems: list[str] = []
    hazards = log.get("hazards")
    if not isinstance(hazards, list) or not hazards:
        return ["hazards: a non-empty list"]
    seen: set[str] = set()
    for n, h in enumerate(hazards):
        where = f"hazards[{n}]"
        if not isinstance(h, dict):
            problems.append(f"{where}: a mapping")
            continue
        if missing := HAZARD_KEYS - set(h):
            problems.append(f"{where}: missing {sorted(missing)}")
            continue
        if extra := set(h) - HAZARD_KEYS - OPTIONAL_KEYS:
            problems.append(f"{where}: unknown {sorted(extra)}")
        if not re.fullmatch(r"H-\d{2}", str(h["id"])) or h["id"] in seen:
            problems.append(f"{where}: id H-NN, unique")
        seen.add(h["id"])
        for key in ("title", "effects"):
            if not isinstance(h[key], str) or not h[key].strip():
                problems.append(f"{h['id']}.{key}: text")
        if not isinstance(h["causes"], list) or not h["causes"] or not all(isinstance(c, str) for c in h["causes"]):
            problems.append(f"{h['id']}.causes: a non-empty list of text")
        problems += _check_risk(f"{h['id']}.initial", h["initial"])
        problems += _check_risk(f"{h['id']}.residual", h["residual"])
        if not problems and h["residual"]["risk"] > h["initial"]["risk"]:
            problems.append(f"{h['id']}: residual risk above the initial risk")
        if h["status"] not in STATUSES:
            problems.append(f"{h['id']}.status: one of {STATUSES}")
        if h["status"] == "gap-fixed" and not h.get("finding"):
            problems.append(f"{h['id']}: a gap-fixed hazard says what was found (`finding`)")
        if h["status"] == "open" and not h.get("actions"):
            problems.append(f"{h['id']}: an open hazard names what is left (`actions`)")
        if not isinstance(h["controls"], list) or not h["controls"]:
            problems.append(f"{h['id']}.controls: a non-empty list")
            continue
        for m, c in enumerate(h["controls"]):
            cw = f"{h['id']}.controls[{m}]"
            if not isinstance(c, dict) or set(c) != {"description", "code", "tests"}:
                problems.append(f"{cw}: description, code and tests")
                continue
            if not c["code"] or not all(isinstance(s, str) and SYMBOL.match(s) for s in c["code"]):
                problems.append(f"{cw}.code: a non-empty list of `module` or `module:attribute`")
            if not c["tests"] or not all(isinstance(t, str) and TEST_REF.match(t) for t in c["tests"]):
                problems.append(f"{cw}.tests: a non-empty list of `tests/....py::test_name`")
    return problems


def all_controls() -> list[tuple[str, dict[str, Any]]]:
    return [(h["id"], c) for h in HAZARDS for c in h["controls"]]


def symbol_problem(ref: str) -> str | None:
    module, _, attrs = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        return f"{ref}: module does not import ({exc})"
    for name in attrs.split(".") if attrs else ():
        if not hasattr(obj, name):
            return f"{ref}: {name} not found"
        obj = getattr(obj, name)
    return None


@functools.cache
def _defined(path: str) -> dict[str, set[str] | None]:
    """Top-level names a test file defines: a function -> None, a class -> its method names."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    out: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = None
        elif isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def cited_test_problem(ref: str) -> str | None:
    found = TEST_REF.match(ref)
    if found is None:
        return f"{ref}: not `path::test_name`"
    path, name, method = found.groups()
    if not (ROOT / path).is_file():
        return f"{ref}: no file {path}"
    defined = _defined(path)
    if name not in defined:
        return f"{ref}: {path} defines no {name}"
    if method is not None and (defined[name] is None or method not in defined[name]):
        return f"{ref}: {name} has no {method}"
    if method is None and defined[name] is not None:
        return f"{ref}: {name} is a class: name its test method"
    if not (name.startswith("test") or name.startswith("Test")) or (method and not method.startswith("test")):
        return f"{ref}: not a test pytest collects"
    return None




def test_the_log_follows_its_schema_and_the_matrix() -> None:
    assert schema_problems(_load()) == []


def test_the_schema_check_catches_what_it_says() -> None:
    good = _load()
    h = dict(good["hazards"][0])
    broken = [
        {**h, "initial": {**h["initial"], "risk": 1}},                     # risk off the matrix
        {**h, "status": "closed"},                                          # unknown status
        {k: v for k, v in h.items() if k != "effects"},                     # a field missing
        {**h, "controls": [{**h["controls"][0], "tests": ["tests/x.py"]}]},  # no test name
        {**h, "controls": [{**h["controls"][0], "code": ["hub/ingest.py"]}]},
        {**h, "status": "gap-fixed", "finding": None},
    ]
    for one in broken:
        assert schema_problems({"hazards": [one]}), one


def test_the_matrix_is_the_one_the_readme_states() -> None:
    text = README.read_text(encoding="utf-8")
    for likelihood, ratings in MATRIX.items():
        label = likelihood.replace("-", " ").capitalize()
        row = re.search(rf"^\| {label} \|([^\n]*)$", text, re.MULTILINE)
        assert row is not None, f"README matrix has no row {label}"
        assert [int(x) for x in re.findall(r"\d", row.group(1))] == list(ratings), label


def test_the_required_hazards_are_logged() -> None:
    titles = " ".join(h["title"].lower() for h in HAZARDS)
    for words in ("wrong person", "responsible council", "reference data", "ended", "not recorded", "lost",
                  "delayed", "wrong body", "beyond a data-sharing agreement", "stale", "correction",
                  "review", "down"):
        assert words in titles, words


@pytest.mark.parametrize(("hazard", "ref"), [(hid, s) for hid, c in all_controls() for s in c["code"]])
def test_every_cited_code_symbol_exists(hazard: str, ref: str) -> None:
    assert symbol_problem(ref) is None, f"{hazard}: {symbol_problem(ref)}"


@pytest.mark.parametrize(("hazard", "ref"), [(hid, t) for hid, c in all_controls() for t in c["tests"]])
def test_every_cited_test_exists(hazard: str, ref: str) -> None:
    assert cited_test_problem(ref) is None, f"{hazard}: {cited_test_problem(ref)}"


def test_the_checks_catch_a_stale_citation() -> None:
    assert symbol_problem("hub.ingest.nhs_number:nhs_number_problem") is None
    assert symbol_problem("hub.ingest.nhs_number:no_such_function") is not None
    assert symbol_problem("hub.no_such_module") is not None
    assert cited_test_problem("tests/unit/test_hazard_log.py::test_the_checks_catch_a_stale_citation") is None
    assert cited_test_problem("tests/unit/test_hazard_log.py::test_renamed_long_ago") is not None
    assert cited_test_problem("tests/unit/no_such_file.py::test_x") is not None
