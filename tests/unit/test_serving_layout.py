"""`s117hub serve` chooses its processes where S117_SEPARATE_WORKERS and
S117_SEPARATE_DELIVERY are left unset: three (the workers apart, the
deliverers apart again) on two usable cores or more with a store several
processes can share, else one; what an operator set is kept. The cores are
the affinity's, fewer under a cgroup CPU quota (a container's limit)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hub.settings import Settings
from hub.worker_process import processes, serving_layout, usable_cores
from hub.domain.dates import england_day

FILE = "sqlite+aiosqlite:////var/lib/s117/hub.db"
PG = "postgresql+asyncpg://hub@127.0.0.1/s117"


def layout(cores: int, url: str = FILE, **given: object) -> tuple[bool | None, bool | None, int]:
    s = serving_layout(Settings(database_url=url, canonical_base="https://s117.example.nhs.uk", **given), cores=cores)
    return s.separate_workers, s.separate_delivery, processes(s)


def test_unset_means_three_processes_on_two_cores_and_one_on_one() -> None:
    assert layout(2) == (True, True, 3)
    assert layout(8, PG) == (True, True, 3)
    assert layout(1) == (False, False, 1)
    assert layout(1, PG) == (False, False, 1)


def test_an_in_memory_store_is_never_split_between_processes() -> None:
    # Each process would open a database of its own: the workers would never see a change.
    assert layout(8, "sqlite+aiosqlite:///:memory:") == (False, False, 1)


def test_what_the_operator_set_is_kept() -> None:
    assert layout(8, separate_workers=False, separate_delivery=False) == (False, False, 1)
    assert layout(1, separate_workers=True, separate_delivery=True) == (True, True, 3)
    # S117_SEPARATE_WORKERS=true alone meant two processes before the choice existed; it still does.
    assert layout(8, separate_workers=True) == (True, False, 2)
    assert layout(8, separate_workers=False) == (False, False, 1)
    # The deliverers apart need the workers apart; asked for alone, they get them.
    assert layout(1, separate_delivery=True) == (True, True, 3)
    assert layout(8, separate_delivery=False) == (True, False, 2)
    assert layout(1, separate_delivery=False) == (False, False, 1)


def test_no_workers_is_one_process_whatever_the_layout() -> None:
    assert layout(8, run_workers=False)[2] == 1


@pytest.mark.parametrize("value", ["auto", "AUTO", "", " auto "])
def test_auto_in_the_environment_leaves_the_choice_to_serve(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("S117_SEPARATE_WORKERS", value)
    monkeypatch.setenv("S117_SEPARATE_DELIVERY", value)
    s = Settings()
    assert (s.separate_workers, s.separate_delivery) == (None, None)
    monkeypatch.setenv("S117_SEPARATE_WORKERS", "false")
    assert Settings().separate_workers is False


def test_a_word_that_is_not_a_choice_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S117_SEPARATE_DELIVERY", "sometimes")
    with pytest.raises(ValueError, match="separate_delivery"):
        Settings()


def test_an_app_built_directly_runs_one_process() -> None:
    # create_app, the demo and the tests: unset is one process (no worker process started).
    s = Settings(database_url=FILE)
    assert processes(s) == 1


def cgroup(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "cgroup"
    for rel, value in limits.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cpu.max").write_text(value + "\n")
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return str(root), str(proc)


@pytest.fixture
def sixteen_cores(monkeypatch: pytest.MonkeyPatch) -> int:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    return 16


def test_a_cpu_quota_smaller_than_the_affinity_bounds_the_cores(tmp_path: Path, sixteen_cores: int) -> None:
    # A container limited to half a core: one core, so one process.
    root, proc = cgroup(tmp_path, "/kubepods/pod1", {"kubepods/pod1": "50000 100000"})
    assert usable_cores(root, proc) == 1
    # 1.5 cores rounds up to 2; the least quota on the way up counts (the slice's here, not the service's 3).
    root, proc = cgroup(tmp_path / "b", "/system.slice/s117hub.service",
                        {"system.slice/s117hub.service": "300000 100000", "system.slice": "150000 100000"})
    assert usable_cores(root, proc) == 2
    root, proc = cgroup(tmp_path / "c", "/system.slice/s117hub.service", {"system.slice/s117hub.service": "max 100000"})
    assert usable_cores(root, proc) == sixteen_cores


def test_no_quota_or_no_cgroup_is_the_affinity(tmp_path: Path, sixteen_cores: int) -> None:
    root, proc = cgroup(tmp_path, "/", {"": "max 100000"})
    assert usable_cores(root, proc) == sixteen_cores
    assert usable_cores(str(tmp_path / "absent"), str(tmp_path / "absent-proc")) == sixteen_cores
    # cgroup v1 only (no "0::" line): the root's, here none.
    (tmp_path / "v1").write_text("4:memory:/x\n1:cpu:/\n")
    assert usable_cores(root, str(tmp_path / "v1")) == sixteen_cores


def test_the_tests_settable_workflow_clock_decides_nothing() -> None:
    # Its offset is kept in the store, which every process reads: the layout is the host's, as without it.
    assert layout(8, workflow_clock_settable=True) == (True, True, 3)
    assert layout(2, workflow_clock_settable=True) == (True, True, 3)
    assert layout(1, workflow_clock_settable=True) == (False, False, 1)
    assert layout(8, workflow_clock_settable=True, separate_workers=True) == (True, False, 2)  # set: kept


async def test_setting_the_clock_with_the_workers_elsewhere_is_not_refused(tmp_path: Path) -> None:
    import httpx

    from hub.api.app import create_app
    from hub.clients import add_client
    from tests.conftest import test_settings

    app = create_app(test_settings(tmp_path, workflow_clock_settable=True))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        admin = (await add_client(hub.engine, "Ops", "HUB", "hub-operator", ["hub:admin"]))[1]
        council = (await add_client(hub.engine, "Bucks", "E06000060", "council", ["s117:read"]))[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            hub.worker_process = object()  # as `start_worker_process` leaves it: the scanner is elsewhere
            try:
                # The access policy first: no key, or a key without hub:admin, learns nothing.
                assert (await http.post("/v1/ops/workflows/clock", json={"advance_days": 3})).status_code == 401
                r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": council},
                                    json={"advance_days": 3})
                assert r.status_code == 403
                r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": admin},
                                    json={"advance_days": 35})
                assert r.status_code == 200, r.text
                assert r.json() == {"as_of": (england_day() + timedelta(days=35)).isoformat(), "offset_days": 35}
                # A bad body: problem details naming the field, the clock unmoved.
                r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": admin},
                                    json={"advance_days": -1})
                assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
                assert [e["field"] for e in r.json()["errors"]] == ["advance_days"]
            finally:
                hub.worker_process = None
            r = await http.post("/v1/ops/workflows/scan", headers={"X-API-Key": admin})
            assert r.json()["as_of"] == (england_day() + timedelta(days=35)).isoformat()
