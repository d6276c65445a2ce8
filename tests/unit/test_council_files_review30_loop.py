"""A council file is read and its rows mapped off the event loop (review 30): opening a 16 MB export with
quoted fields is seconds of pure Python (measured: /health/live held 2.6 s during the POST and 5.9 s as
its processing began, on a real hub), so the POST's whole-file check, the job's reading of the stored
file, its passing over rows reported before a restart and the mapping of each chunk run in a worker
thread while the loop goes on answering. In-process: which thread maps each row."""

from __future__ import annotations

import threading

from adapters.council_files import mapping
from hub.clients import add_client
from tests.unit.test_council_files_api import PERSON_A, trust_changes

HDR = "RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO"


async def test_the_file_is_checked_and_its_rows_mapped_off_the_event_loop(app_hub, monkeypatch):  # noqa: ANN001
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    for change in trust_changes(PERSON_A, "loop"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    loop_thread = threading.current_thread()
    opened: list[bool] = []
    mapped: list[bool] = []
    real_open, real_row = mapping._open_csv, mapping._csv_row

    def open_csv(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        opened.append(threading.current_thread() is loop_thread)
        return real_open(*args, **kwargs)

    def csv_row(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        mapped.append(threading.current_thread() is loop_thread)
        return real_row(*args, **kwargs)

    monkeypatch.setattr(mapping, "_open_csv", open_csv)
    monkeypatch.setattr(mapping, "_csv_row", csv_row)
    body = (HDR + "\n" + "".join(f"L-{i},REVIEW_DONE,01/07/2025,,9991100016\n" for i in range(600))).encode()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=body,
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    await app_hub.hub.files.wait(r.json()["file_id"])
    done = (await app_hub.http.get(r.headers["location"], headers={"X-API-Key": key})).json()
    assert (done["status"], done["accepted"]) == ("processed", 600), done
    assert opened and not any(opened)  # the POST's check and the job's reading: never on the loop
    assert len(mapped) == 600 and not any(mapped)  # every row mapped in a worker thread
