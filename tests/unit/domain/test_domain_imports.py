"""hub/domain stays pure: standard library and itself only."""

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).parents[3] / "hub" / "domain"
FORBIDDEN = {"fastapi", "sqlalchemy", "aiokafka", "httpx", "yaml", "pydantic", "structlog", "logging"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_files_exist():
    assert len(list(DOMAIN.rglob("*.py"))) >= 5


def test_domain_imports_nothing_forbidden():
    offenders = {
        str(path.relative_to(DOMAIN)): sorted(imported_roots(path) & FORBIDDEN) for path in DOMAIN.rglob("*.py")
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_domain_imports_only_stdlib_and_hub_domain():
    allowed = set(sys.stdlib_module_names) | {"hub", "__future__"}
    for path in DOMAIN.rglob("*.py"):
        assert imported_roots(path) <= allowed, path
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hub."):
                assert node.module.startswith("hub.domain"), (path, node.module)
