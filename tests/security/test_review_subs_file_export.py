"""Review (file-export subscriptions), reproduced on a running hub: the
council's SFTP account acts as the hub's user in `S117_EXPORT_DIR/<org>/`
(README, file_export.py), so it can leave a symbolic link there. A link named
as tomorrow's file, pointing at another council's file
(`../E10000034/<day>.ndjson`), had the hub append Buckinghamshire's FHIR
messages (NHS numbers, names) to Worcestershire's collection file; pointing
anywhere else, the hub appended to any file its user may write. Now neither
the organisation's directory nor the day's file is followed if it is a link,
and the file must be a regular one: the delivery fails (`OSError`, retried,
`last_error` names only the class) and nothing is written through the link."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import select

from hub.delivery.file_export import FileExportDeliverer, append_durably, export_path
from hub.store.schema import deliveries
from tests.support import push_scenario

COUNCIL, OTHER = "E06000060", "E10000034"
VICTIM = b'{"victim": "Worcestershire\'s own line"}\n'


def _deliverer(app_hub, export_dir: Path) -> FileExportDeliverer:  # noqa: ANN001
    return FileExportDeliverer(app_hub.hub.engine, app_hub.hub.protector, export_dir,
                               backoff_base=0.0, backoff_cap=0.0)


async def _subscribe_and_push(app_hub) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"channel": "file"})
    assert r.status_code == 201, r.text
    await push_scenario(app_hub, 41)
    return r.json()["subscription_id"]


async def _errors(app_hub, sub: str) -> set:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return set((await conn.execute(select(deliveries.c.last_error).where(
            deliveries.c.subscription_id == sub, deliveries.c.attempts > 0))).scalars())


async def test_a_link_to_another_councils_file_is_not_written_through(app_hub, tmp_path):
    sub = await _subscribe_and_push(app_hub)
    export_dir = tmp_path / "exports"
    today = export_path(export_dir, COUNCIL, datetime.now(UTC))
    victim = export_path(export_dir, OTHER, datetime.now(UTC))
    for d in (export_dir, today.parent, victim.parent):
        d.mkdir(mode=0o700, exist_ok=True)
    victim.write_bytes(VICTIM)
    os.symlink(f"../{OTHER}/{victim.name}", today)  # what the council's SFTP account can do

    assert await _deliverer(app_hub, export_dir).run_once() >= 1

    assert victim.read_bytes() == VICTIM  # not one of Buckinghamshire's messages in Worcestershire's file
    assert today.is_symlink()
    assert await _errors(app_hub, sub) == {"OSError"}


async def test_a_dangling_link_is_not_created_through(app_hub, tmp_path):
    sub = await _subscribe_and_push(app_hub)
    export_dir = tmp_path / "exports"
    today = export_path(export_dir, COUNCIL, datetime.now(UTC))
    today.parent.mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere.ndjson"
    os.symlink(target, today)

    await _deliverer(app_hub, export_dir).run_once()

    assert not target.exists()
    assert await _errors(app_hub, sub) == {"OSError"}


async def test_an_organisation_directory_that_is_a_link_is_not_followed(app_hub, tmp_path):
    sub = await _subscribe_and_push(app_hub)
    export_dir = tmp_path / "exports"
    (export_dir / OTHER).mkdir(parents=True, mode=0o700)
    os.symlink(OTHER, export_dir / COUNCIL)

    await _deliverer(app_hub, export_dir).run_once()

    assert list((export_dir / OTHER).iterdir()) == []
    errors = await _errors(app_hub, sub)
    assert errors and errors <= {"OSError", "NotADirectoryError"}  # O_DIRECTORY | O_NOFOLLOW on a link: ENOTDIR


async def test_a_fifo_in_place_of_the_file_is_refused_not_waited_on(tmp_path):
    path = export_path(tmp_path, COUNCIL, datetime.now(UTC))
    path.parent.mkdir(mode=0o700)
    os.mkfifo(path)
    try:
        append_durably(path, b"{}\n")
    except OSError:
        pass
    else:
        raise AssertionError("a FIFO was written to")


async def test_once_the_link_is_gone_the_messages_are_written_in_order(app_hub, tmp_path):
    sub = await _subscribe_and_push(app_hub)
    export_dir = tmp_path / "exports"
    today = export_path(export_dir, COUNCIL, datetime.now(UTC))
    today.parent.mkdir(parents=True, mode=0o700)
    os.symlink(tmp_path / "elsewhere.ndjson", today)
    deliverer = _deliverer(app_hub, export_dir)
    await deliverer.run_once()
    today.unlink()
    for _ in range(50):
        if not await deliverer.run_once():
            break
    numbers = [orjson.loads(line)["event_number"] for line in today.read_bytes().splitlines()]
    assert numbers == list(range(1, len(numbers) + 1)) and numbers
    assert oct(today.stat().st_mode & 0o777) == oct(0o600)
    assert await _errors(app_hub, sub) == {None}
