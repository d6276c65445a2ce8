"""`s117hub send-file`, a nightly job's signal: a progress answer that is not
JSON (a reverse proxy's 502 page, a hub restarting) ends with the file id and
exit 1, not a Python traceback; a file the hub gave up (`failed`) exits 1
(send it again), not 3 ("some rows rejected")."""

from __future__ import annotations

import argparse
import json

import httpx
import pytest

from hub import cli

FILE_ID = "5f0c2a57-0d0b-4f5e-9a55-3c1f2b7e9d10"


def _run(tmp_path, monkeypatch, answers: list[httpx.Response]) -> tuple[int, dict]:  # noqa: ANN001
    monkeypatch.setattr(httpx, "post", lambda *a, **kw: httpx.Response(
        202, json={"file_id": FILE_ID, "status": "processing", "rows": 2, "rows_done": 0}))
    monkeypatch.setattr(httpx, "get", lambda *a, **kw: answers.pop(0))
    monkeypatch.setattr("time.sleep", lambda s: None)
    path = tmp_path / "swift.csv"
    path.write_text("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\n")
    args = argparse.Namespace(api_key="k", url="http://hub", format="swift_csv", timeout=5.0, file=path,
                              charset="utf-8")
    with pytest.raises(SystemExit) as exit_:
        cli._send_file(args)
    return exit_.value.code, args


def test_the_files_charset_is_declared(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """`--charset windows-1252`: the Content-Type says so (the hub reads the file as declared)."""
    sent = {}

    def post(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        sent.update(kw["headers"])
        return httpx.Response(422, json={"status": 422})

    monkeypatch.setattr(httpx, "post", post)
    path = tmp_path / "swift.csv"
    path.write_bytes("RECORD_ID,SURNAME\nR1,Zoë\n".encode("cp1252"))
    for charset, expected in (("windows-1252", "text/csv; charset=windows-1252"), ("utf-8", "text/csv; charset=utf-8")):
        args = argparse.Namespace(api_key="k", url="http://hub", format="swift_csv", timeout=5.0, file=path,
                                  charset=charset)
        with pytest.raises(SystemExit):
            cli._send_file(args)
        assert sent["Content-Type"] == expected


def test_a_progress_answer_that_is_not_json_exits_1_with_the_file_id(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, _ = _run(tmp_path, monkeypatch, [
        httpx.Response(200, json={"file_id": FILE_ID, "status": "processing", "rows": 2, "rows_done": 1}),
        httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})])
    out = capsys.readouterr().out
    assert code == 1
    assert json.loads(out) == {"status": 502, "detail": "the hub answered with something other than JSON"}
    code, _ = _run(tmp_path, monkeypatch, [
        httpx.Response(200, text="<html>Service Unavailable</html>", headers={"Content-Type": "text/html"})])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and (out["error"], out["file_id"], out["status"]) == ("not-json", FILE_ID, 200)


def test_a_file_the_hub_gave_up_exits_1_and_rejected_rows_3(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    report = [{"row": 1, "status": "accepted"}, {"row": 2, "status": "rejected", "errors": [
        {"field": "row 2", "reason": "not recorded: send it again"}]}]
    code, _ = _run(tmp_path, monkeypatch, [httpx.Response(200, json={
        "file_id": FILE_ID, "status": "failed", "rows": 2, "rows_done": 2, "rejected": 1, "report": report})])
    assert code == 1 and json.loads(capsys.readouterr().out)["status"] == "failed"
    code, _ = _run(tmp_path, monkeypatch, [httpx.Response(200, json={
        "file_id": FILE_ID, "status": "processed", "rows": 2, "rows_done": 2, "rejected": 1, "report": report})])
    assert code == 3


def test_rows_recorded_with_a_warning_are_said_on_stderr_by_row_number(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """A row accepted with a warning (a successor of a split council named to no effect: recorded, but it
    changed nothing) is easy to miss in a long report: the job's log says which rows, by number only, and
    the exit stays 0 (nothing was refused)."""
    warning = {"field": "row 2, column PRE_DETENTION_LA_GSS", "reason": "is not one of the councils ..."}
    report = [{"row": 1, "status": "accepted"}, {"row": 2, "status": "accepted", "warnings": [warning]}]
    code, _ = _run(tmp_path, monkeypatch, [httpx.Response(200, json={
        "file_id": FILE_ID, "status": "processed", "rows": 2, "rows_done": 2, "rejected": 0, "report": report})])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["report"][1]["warnings"] == [warning]
    assert "send-file: 1 row(s) recorded with a warning (rows 2)" in captured.err
    report[1].pop("warnings")
    _run(tmp_path, monkeypatch, [httpx.Response(200, json={
        "file_id": FILE_ID, "status": "processed", "rows": 2, "rows_done": 2, "rejected": 0, "report": report})])
    assert "warning" not in capsys.readouterr().err
