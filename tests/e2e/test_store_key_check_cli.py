"""The commands an operator runs, given a data key that is not the store's,
stop with one plain line naming the settings to look at (hub/store/key_check.py):
`s117hub serve` (and `s117hub workers` run by hand) exits 2 before it starts,
`s117hub export` builds nothing and `s117hub audit verify` reports a problem
(2); with no key given and the key file missing, no key file is made. Real processes on a real SQLite
store; no traceback, no key material in what they print."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import func, select

from hub.crypto import DataProtector
from hub.store.db import create_engine, create_schema
from hub.store.key_check import check_data_key
from hub.store.schema import council_exports, store_keys

REPO = Path(__file__).resolve().parents[2]
S117HUB = str(Path(sys.executable).parent / "s117hub")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _store(url: str, key: bytes) -> None:
    engine = create_engine(url)
    try:
        await create_schema(engine)
        await check_data_key(engine, DataProtector(key))
    finally:
        await engine.dispose()


async def _count(url: str, table) -> int:  # noqa: ANN001
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    finally:
        await engine.dispose()


def test_serve_export_and_audit_refuse_a_key_that_is_not_the_stores(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    right, wrong = Fernet.generate_key(), Fernet.generate_key()
    asyncio.run(_store(url, right))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S117_")} | {
        "S117_DATABASE_URL": url, "S117_DATA_KEY": wrong.decode(), "S117_PORT": str(port),
        "S117_EXPORT_DIR": str(tmp_path / "exports"), "S117_SEPARATE_WORKERS": "false",
        "S117_SEPARATE_DELIVERY": "false"}
    runs = {
        "serve": subprocess.run([S117HUB, "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60),
        "export": subprocess.run([S117HUB, "export", "--org", "E06000060"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=60),
        "audit": subprocess.run([S117HUB, "audit", "verify"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60),
        "workers": subprocess.run([S117HUB, "workers"], cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=60),
        # No key given and the key file missing: refused the same way, and no key file is made.
        "serve without a key": subprocess.run(
            [S117HUB, "serve"], cwd=REPO, capture_output=True, text=True, timeout=60,
            env={k: v for k, v in env.items() if k != "S117_DATA_KEY"} | {
                "S117_DATA_KEY_FILE": str(tmp_path / "var" / "data.key")}),
    }
    for name, run in runs.items():
        said = run.stdout + run.stderr
        assert run.returncode == (1 if name == "export" else 2), (name, said)
        assert ("does not open" in run.stderr or "does not exist" in run.stderr) \
            and "S117_DATA_KEY" in run.stderr, (name, said)
        assert "Traceback" not in said, (name, said)
        assert right.decode() not in said and wrong.decode() not in said, name
    with socket.socket() as s:  # serve never listened
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "var" / "data.key").exists()  # no key file made just to be refused
    assert asyncio.run(_count(url, council_exports)) == 0  # export built nothing
    assert asyncio.run(_count(url, store_keys)) == 1  # and the store's key record is untouched
