"""Review (council files out, symbolic links): `<export_dir>/<org>/outbound/`
and its `ack/` are where a council's SFTP account collects, moves and deletes
files, acting as the hub's user; anything there may be the council's. As in
the file export fix (hub/delivery/file_export.py), nothing there is followed
if it is a link. Before:

* a `.<name>.part` link planted for an export the council had asked for (its
  name follows from the export id and time the API answered) had the hub
  truncate the link's target and write the extract into it (the hub's
  database, its data key, another council's file);
* `outbound` a link to another council's directory put this council's
  extract there, for the other council to collect;
* its own file replaced by a link had GET /v1/exports/{id} stream the link's
  target (the hub's data key) to the council's key;
* a link in `ack/` (or `ack/` itself a link) counted as an acknowledgement.
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import pytest

from hub.exports import LONDON, ExportService, NotFollowed, outbound_dir
from tests.support import push_scenario

COUNCIL, OTHER = "E06000060", "E08000025"
SECRET = b"the hub's data key: never to leave the hub\n"


@pytest.fixture
async def exports(app_hub, tmp_path: Path):  # noqa: ANN001, ANN201
    await push_scenario(app_hub, seed=71)
    h = app_hub.hub
    h.exports = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    return h.exports


async def _ask(app_hub) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"layout": "swift_csv", "mode": "full"})
    assert r.status_code == 202, r.text
    return r.json()["export_id"]


def _name(row) -> str:  # noqa: ANN001
    """The name the build gives the file (hub/exports.py `build`): known to the council in advance."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return f"S117_{row.org_code}_{created.astimezone(LONDON):%Y%m%d_%H%M%S}_FULL_{row.export_id[:8]}.csv"


async def test_a_part_link_planted_for_the_next_file_is_not_written_through(app_hub, exports, tmp_path):
    victim = tmp_path / "hub.db-like"
    victim.write_bytes(SECRET)
    export_id = await _ask(app_hub)
    name = _name(await exports.export_row(export_id))
    outbound = outbound_dir(exports._dir, COUNCIL)
    outbound.mkdir(parents=True)
    for planted in (f".{name}.part", f".{name}.sha256.part", f"{name}.sha256"):
        (outbound / planted).symlink_to(victim)
    await exports.build_waiting()
    assert victim.read_bytes() == SECRET  # untouched
    assert (await exports.export_row(export_id)).state == "ready"
    for made in (name, f"{name}.sha256"):
        assert not (outbound / made).is_symlink() and (outbound / made).is_file()
    assert not any(p.name.endswith(".part") for p in outbound.iterdir())


async def test_outbound_a_link_to_another_councils_directory_is_not_followed(app_hub, exports):
    other = outbound_dir(exports._dir, OTHER)
    other.mkdir(parents=True)
    (exports._dir / COUNCIL).mkdir()
    (exports._dir / COUNCIL / "outbound").symlink_to(other)
    export_id = await _ask(app_hub)
    with pytest.raises(NotFollowed):
        await exports.build_waiting()
    assert list(other.iterdir()) == []  # nothing of this council's in the other council's collection
    assert (await exports.export_row(export_id)).state != "ready"


async def test_a_download_never_streams_what_a_link_points_at(app_hub, exports, tmp_path):
    key = tmp_path / "data.key"
    key.write_bytes(SECRET)
    export_id = await _ask(app_hub)
    await exports.build_waiting()
    headers = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.get(f"/v1/exports/{export_id}", headers=headers)
    assert r.status_code == 200 and SECRET not in r.content
    path = exports.file_path(await exports.export_row(export_id))
    path.unlink()
    path.symlink_to(key)  # by the council's SFTP account
    r = await app_hub.http.get(f"/v1/exports/{export_id}", headers=headers)
    assert SECRET not in r.content
    assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json")
    path.unlink()
    os.mkfifo(path)  # nor anything else not a regular file (a FIFO would hang the read)
    r = await app_hub.http.get(f"/v1/exports/{export_id}", headers=headers)
    assert r.status_code == 410


async def test_only_a_regular_file_in_a_real_ack_folder_acknowledges(app_hub, exports, tmp_path):
    export_id = await _ask(app_hub)
    await exports.build_waiting()
    row = await exports.export_row(export_id)
    outbound = outbound_dir(exports._dir, COUNCIL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / row.file_name).write_bytes(b"x")
    (outbound / "ack").symlink_to(elsewhere)  # ack/ a link
    assert await exports.scan_ack_folders() == 0
    (outbound / "ack").unlink()
    (outbound / "ack").mkdir()
    (outbound / "ack" / row.file_name).symlink_to(outbound / row.file_name)  # the file a link
    assert await exports.scan_ack_folders() == 0
    assert (await exports.export_row(export_id)).state == "ready"
    (outbound / "ack" / row.file_name).unlink()
    (outbound / row.file_name).rename(outbound / "ack" / row.file_name)  # moved, as the SFTP job does
    assert await exports.scan_ack_folders() == 1
    assert (await exports.export_row(export_id)).state == "acknowledged"
