"""`s117hub export` whose build gave way to another builder (it stalled past the claim's lease and
the hub's worker took the export over: hub/exports.py) says so and exits non-zero. Before, it
printed state `building` with a path to a file that did not exist yet, and exited 0."""

from __future__ import annotations

import argparse
import asyncio

import pytest
from cryptography.fernet import Fernet

from hub import export_cli
from hub.exports import ExportService
from hub.settings import get_settings
from hub.store.db import create_engine, create_schema


async def _a_store(url: str) -> None:
    engine = create_engine(url)
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()


def test_an_export_that_gave_way_says_so_and_fails(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    for name, value in {"S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
                        "S117_DATA_KEY": Fernet.generate_key().decode(),
                        "S117_EXPORT_DIR": str(tmp_path / "exports")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    asyncio.run(_a_store(get_settings().database_url))  # the hub's store: `export` makes none (review 31)

    async def gave_way(self, row, progress=None, builder=None) -> bool:  # noqa: ANN001
        return False  # as `build` answers when another builder holds the export now

    monkeypatch.setattr(ExportService, "build", gave_way)
    try:
        with pytest.raises(SystemExit) as ended:
            export_cli.export(argparse.Namespace(org="E06000060", layout="swift_csv"))
    finally:
        get_settings.cache_clear()
    said = str(ended.value.code)
    assert said.startswith("export: another builder took export ") and "state queued" in said
    assert capsys.readouterr().out == ""  # no JSON claiming a path to a file that is not there
