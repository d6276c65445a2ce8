"""Review 31, a new operator with only the README: the `s117hub` commands it names, run in-process on a
real SQLite store. Each test failed before its fix (a traceback, a secret on the terminal, a client made
for no organisation, a running demo's database removed, an audit edit `audit verify` passed)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from hub import cli
from hub.settings import get_settings
from hub.store.db import create_engine
from hub.store.schema import api_clients, audit_chain
from tests.support import detention


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """S117_* settings naming a store and key file of this test's own; the settings read afresh."""
    for name in ("S117_DATA_KEY", "S117_CANONICAL_BASE", "S117_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("S117_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp_path / "data.key"))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _clients(path: Path) -> list[str]:
    """The client ids in the store at `path` (none if no store was made)."""
    if not (path / "hub.db").exists():
        return []

    async def read() -> list[str]:
        engine = create_engine(f"sqlite+aiosqlite:///{path / 'hub.db'}")
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(select(api_clients.c.client_id))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_add_client_with_an_unknown_scope_is_one_line_naming_the_known_ones(store_env: Path) -> None:
    # Was: ValueError traceback from hub/clients.py.
    with pytest.raises(SystemExit) as done:
        cli.main(["add-client", "--name", "Bucks", "--org", "E06000060", "--kind", "council",
                  "--scopes", "register:wrte", "s117:read"])
    message = str(done.value.code)
    assert "--scopes: unknown register:wrte" in message and "register:write" in message
    assert _clients(store_env) == []


@pytest.mark.parametrize("org", ["", " RNU", "rnu", "E06 000060"])
def test_add_client_refuses_an_org_code_that_names_no_organisation(store_env: Path, org: str) -> None:
    # Was: a client `-1a2b3c4d` (blank org) or `rnu-...`, whose org matches no hospital, agreement or rule.
    with pytest.raises(SystemExit) as done:
        cli.main(["add-client", "--name", "X", "--org", org, "--kind", "trust", "--scopes", "register:write"])
    assert str(done.value.code).startswith("add-client: --org:")
    assert _clients(store_env) == []


def test_add_client_as_the_readme_gives_it_still_prints_the_key_once(store_env: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    cli.main(["add-client", "--name", "Oxford Health", "--org", "RNU", "--kind", "trust",
              "--scopes", "register:write", "s117:read"])
    out = json.loads(capsys.readouterr().out)
    assert out["client_id"].startswith("rnu-") and out["api_key"].startswith("s117_")
    assert _clients(store_env) == [out["client_id"]]


@pytest.mark.parametrize("command", [["serve"], ["export", "--org", "E06000060"], ["audit", "verify"],
                                     ["fhir-package", "--out", "pkg"]])
def test_a_bad_setting_is_named_in_one_line_and_its_values_never_shown(
        store_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: list[str]) -> None:
    # Was: pydantic's traceback quoting the input: for the model's own check (the canonical base a
    # PostgreSQL store requires) every setting given, S117_DATA_KEY and the database password included.
    monkeypatch.setenv("S117_DATA_KEY", "TOPSECRETDATAKEYVALUE")
    monkeypatch.setenv("S117_DATABASE_URL", "postgresql+asyncpg://hub:PASSWORD123@db.invalid/hub")
    with pytest.raises(SystemExit) as done:
        cli.main(command)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"s117hub {command[0]}: setting canonical_base: S117_CANONICAL_BASE is required" in err
    assert "TOPSECRET" not in err and "PASSWORD123" not in err and "Traceback" not in err
    get_settings.cache_clear()
    monkeypatch.setenv("S117_DATABASE_URL", f"sqlite+aiosqlite:///{store_env / 'hub.db'}")
    monkeypatch.setenv("S117_PORT", "eighty")
    with pytest.raises(SystemExit) as done:
        cli.main(command)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "setting S117_PORT: Input should be a valid integer" in err and "eighty" not in err


def test_fhir_package_refuses_a_canonical_base_the_hub_would_refuse(tmp_path: Path) -> None:
    # Was: 82 files written with canonical URLs such as "not a url/fhir/CapabilityStatement/s117-hub".
    with pytest.raises(SystemExit) as done:
        cli.main(["fhir-package", "--out", str(tmp_path / "out"), "--canonical-base", "not a url"])
    assert "--canonical-base: must be an absolute http(s) URL" in str(done.value.code)
    assert not (tmp_path / "out").exists()


def test_fhir_package_into_a_place_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    # Was: FileNotFoundError / NotADirectoryError tracebacks.
    with pytest.raises(SystemExit) as done:
        cli.main(["fhir-package", "--out", str(tmp_path / "out"), "--canonical-base", "https://s117.example",
                  "--tgz", str(tmp_path / "no-such-folder" / "pkg.tgz")])
    assert str(done.value.code).startswith("fhir-package: cannot write ") and "pkg.tgz" in str(done.value.code)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as done:
        cli.main(["fhir-package", "--out", str(tmp_path / "a-file"), "--canonical-base", "https://s117.example"])
    assert str(done.value.code).startswith("fhir-package: cannot write ")


def test_export_help_says_an_icb_or_trust_may_have_its_extract_too(capsys: pytest.CaptureFixture) -> None:
    # Was: "--org ORG  the council's GSS code", while the README (and the command) take an ICB's or trust's.
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the council's GSS code" not in help_text and "an ICB's or trust's ODS" in help_text


def test_audit_person_at_a_terminal_asks_for_the_number_without_echoing_it(
        store_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # Was: at a terminal it waited for a line without a word (a newcomer took it to hang), the number
    # echoed on the screen as typed.
    asked = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def getpass(prompt: str, stream: object = None) -> str:
        asked.append((prompt, stream))
        return "9991100016"

    cli.main(["add-client", "--name", "ops", "--org", "HUB", "--kind", "hub-operator", "--scopes", "hub:admin"])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", getpass)
    with pytest.raises(SystemExit) as done:
        cli.main(["audit", "person"])
    assert done.value.code == 1  # no one on this empty register
    assert asked == [("NHS number (not shown): ", sys.stderr)]
    assert "no person with that NHS number" in capsys.readouterr().out


async def test_audit_verify_catches_an_entry_moved_off_the_person_it_is_about(app_hub) -> None:  # noqa: ANN001
    # `audit person` finds a person's reads by audit_chain.person_id, a column outside the entry's hash:
    # set to another id, every read of the person vanished from the subject access answer while
    # `audit verify` (README: "catches an edited ... entry") still said ok.
    nhs = "9991100016"
    for change in detention(nhs, "r31"):
        assert (await app_hub.http.post("/v1/register-changes", json=change,
                                        headers={"X-API-Key": app_hub.keys["trust"]})).status_code == 202
    bucks = {"X-API-Key": app_hub.keys["E06000060"]}
    found = await app_hub.http.post("/v1/persons/lookup", json={"nhs_number": nhs}, headers=bucks)
    assert found.status_code == 200, found.text
    person_id = found.json()["person_id"]
    assert (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=bucks)).status_code == 200
    chain = app_hub.hub.audit
    while await chain.extend():
        pass
    assert (await chain.verify())["ok"]
    reads = [e for e in await chain.person(person_id) if e.get("action") == "read"]
    assert len(reads) == 2  # the lookup and the query
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(audit_chain.update().where(audit_chain.c.seq.in_([e["chain_seq"] for e in reads]))
                           .values(person_id="00000000-0000-0000-0000-000000000000"))
    assert not [e for e in await chain.person(person_id) if e.get("action") == "read"]
    result = await chain.verify()
    assert not result["ok"]
    assert {p["seq"] for p in result["problems"]} == {e["chain_seq"] for e in reads}
    assert all("person or organisation" in p["problem"] for p in result["problems"])
    # The organisation the entry names, too.
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_chain SET person_id = :p WHERE seq = :s"),
                           {"p": person_id, "s": reads[0]["chain_seq"]})
        await conn.execute(text("UPDATE audit_chain SET person_id = :p, org = 'E10000034' WHERE seq = :s"),
                           {"p": person_id, "s": reads[1]["chain_seq"]})
    assert [p["seq"] for p in (await chain.verify())["problems"]] == [reads[1]["chain_seq"]]


async def test_a_second_demo_on_a_busy_port_leaves_the_running_demos_data_alone(tmp_path: Path) -> None:
    # Was: `make run` twice: the second removed var/demo (the first's database and key file, in use),
    # made new ones, and only then failed on the port.
    from hub.demo import run_demo

    data_dir = tmp_path / "demo"
    data_dir.mkdir()
    (data_dir / "hub.db").write_bytes(b"the running demo's store")
    with socket.socket() as busy, socket.socket() as spare:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
        spare.close()
        with pytest.raises(SystemExit) as done:
            await run_demo(port=busy.getsockname()[1], receiver_port=free, duration=1, data_dir=data_dir)
        assert f"127.0.0.1:{busy.getsockname()[1]} is in use" in str(done.value.code)
        assert "--port" in str(done.value.code)
        with pytest.raises(SystemExit) as done:
            await run_demo(port=free, receiver_port=busy.getsockname()[1], duration=1, data_dir=data_dir)
        assert "--receiver-port" in str(done.value.code)
    assert (data_dir / "hub.db").read_bytes() == b"the running demo's store"


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "person"], ["export", "--org", "E06000060"]])
@pytest.mark.parametrize("store", ["no file", "no schema"])
def test_audit_and_export_on_a_database_the_hub_never_wrote_refuse_and_make_nothing(
        store_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: list[str],
        store: str) -> None:
    # Was: a mistyped S117_DATABASE_URL made an empty store (its folder too) and answered from it:
    # `audit verify` {"entries_checked": 0, "ok": true}, exit 0; `export` a full extract listing no one,
    # put in the council's outbound folder for collection.
    path = store_env / "typo" / "hub.db"
    if store == "no schema":  # as a PostgreSQL database the hub has never migrated
        path.parent.mkdir()
        path.write_bytes(b"")
    monkeypatch.setenv("S117_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("S117_EXPORT_DIR", str(store_env / "exports"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("9991100016\n"))
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as done:
        cli.main(command)
    captured = capsys.readouterr()
    message = captured.err + (str(done.value.code) if isinstance(done.value.code, str) else "")
    assert done.value.code != 0 and "S117_DATABASE_URL names no hub store" in message
    assert captured.out == ""
    assert path.exists() == (store == "no schema")
    if path.exists():  # no schema made in it
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert not (store_env / "exports").exists() and not (store_env / "data.key").exists()


def test_output_piped_to_a_reader_that_stops_early_ends_without_a_traceback(tmp_path: Path) -> None:
    # Was: `s117hub audit verify | head` (or any command's JSON piped so) ended in a BrokenPipeError
    # traceback, and a second one as Python flushed stdout at exit.
    import subprocess

    from hub.settings import REPO_ROOT

    run = subprocess.Popen([sys.executable, "-m", "hub.cli", "fhir-package", "--out", str(tmp_path),
                            "--canonical-base", "https://s117.example"],
                           cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()  # the reader gone before the command prints
    err = run.stderr.read().decode()
    assert run.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == ""
