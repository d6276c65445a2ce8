"""Export directories are the hub's alone: every directory the hub makes for
exports is 0700 whatever the umask, and one an older hub left wider is
narrowed at start (hub/store/private_files.py).

Before: `S117_EXPORT_DIR` and `S117_EXPORT_DIR/<org>` were made 0755 (pathlib's
`mkdir(parents=True)` gives the parents it makes the umask's mode) when a
council extract was the first file written there; a file subscription then
appended its 0600 files into them as they were."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.delivery.file_export import FileExportDeliverer, append_durably, export_path
from hub.exports import ExportService, outbound_dir, write_atomically
from hub.store.private_files import private_dir

ORG = "E06000060"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_file_subscription_makes_its_directories_0700(tmp_path: Path, umask_022: None) -> None:
    export_dir = tmp_path / "srv" / "exports"  # neither exists yet
    path = export_path(export_dir, ORG, datetime.now(UTC))
    append_durably(path, b'{"event_id":"a"}\n')
    assert [mode(p) for p in (tmp_path / "srv", export_dir, export_dir / ORG)] == [0o700] * 3
    assert mode(path) == 0o600


def test_a_council_extract_makes_its_directories_0700(tmp_path: Path, umask_022: None) -> None:
    export_dir = tmp_path / "exports"
    directory = outbound_dir(export_dir, ORG)
    write_atomically(directory, "S117_E06000060_FULL.csv", b"x\r\n")
    assert [mode(p) for p in (export_dir, export_dir / ORG, directory)] == [0o700] * 3
    assert mode(directory / "S117_E06000060_FULL.csv") == 0o600
    # ...and a file subscription's file beside it finds them so.
    append_durably(export_path(export_dir, ORG, datetime.now(UTC)), b"{}\n")
    assert [mode(p) for p in (export_dir, export_dir / ORG)] == [0o700] * 2


async def test_a_full_extract_through_the_api_leaves_nothing_wider(app_hub, tmp_path: Path, umask_022: None) -> None:  # noqa: ANN001
    h = app_hub.hub
    exporter = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    h.exports = exporter
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys[ORG]}, json={"layout": "swift_csv"})
    assert r.status_code == 202, r.text
    await exporter.build_waiting()
    made = [tmp_path / "exports", *(p for p in (tmp_path / "exports").rglob("*"))]
    assert {p.name for p in made} >= {"exports", ORG, "outbound"}
    assert {str(p.relative_to(tmp_path)): mode(p) for p in made if p.is_dir()} == {
        "exports": 0o700, f"exports/{ORG}": 0o700, f"exports/{ORG}/outbound": 0o700}
    assert all(mode(p) == 0o600 for p in made if p.is_file())


def _older_hubs_tree(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    export_dir = tmp_path / "exports"
    dirs = [export_dir, export_dir / ORG, export_dir / ORG / "outbound", export_dir / "E10000034"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    elsewhere = tmp_path / "elsewhere"  # a symbolic link in the tree is not followed
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    (export_dir / "link").symlink_to(elsewhere, target_is_directory=True)
    return export_dir, dirs, elsewhere


async def test_directories_an_older_hub_left_wider_are_narrowed_at_start(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    h = app_hub.hub
    export_dir, dirs, elsewhere = _older_hubs_tree(tmp_path)
    FileExportDeliverer(h.engine, h.protector, export_dir)
    assert [mode(d) for d in dirs] == [0o700] * len(dirs)
    assert mode(elsewhere) == 0o755

    export_dir, dirs, elsewhere = _older_hubs_tree(tmp_path / "cli")  # `s117hub export` makes only the service
    ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, export_dir, 36.0)
    assert [mode(d) for d in dirs] == [0o700] * len(dirs)
    assert mode(elsewhere) == 0o755


async def test_a_hub_started_on_an_older_export_dir_narrows_it(tmp_path: Path) -> None:
    from hub.api.app import create_app
    from tests.conftest import test_settings

    export_dir, dirs, _ = _older_hubs_tree(tmp_path)
    app = create_app(test_settings(tmp_path / "var", export_dir=export_dir))
    async with app.router.lifespan_context(app):
        assert [mode(d) for d in dirs] == [0o700] * len(dirs)


def test_a_start_does_not_make_a_missing_export_dir(tmp_path: Path) -> None:
    from hub.store.private_files import narrow_export_dirs

    narrow_export_dirs(tmp_path / "exports")
    assert not (tmp_path / "exports").exists()


def test_private_dir_makes_missing_parents_0700_and_keeps_what_it_did_not_make(tmp_path: Path, umask_022: None) -> None:
    os.chmod(tmp_path, 0o755)
    private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(tmp_path) == 0o755  # not the hub's: left as it is


def test_a_shared_sticky_directory_is_never_narrowed(tmp_path: Path, umask_022: None) -> None:
    """A database, key file or export directory put straight into a shared directory (/tmp: sticky,
    1777) made the hub narrow it to 0700, closing it to every other user of the machine (initdb, run as
    another user, then failed on /tmp). A sticky directory, or one another user owns, is left as it is;
    the hub's files in it are 0600 all the same."""
    from hub.store.private_files import private_sqlite

    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_sqlite(shared / "hub.db")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert mode(shared / "hub.db") == 0o600
    private_dir(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    private_sqlite(own / "hub.db")
    assert mode(own) == 0o700  # the hub's own directory is still narrowed
