"""Review (CLI): `s117hub send-snapshot` while the hub compares. A progress
read answered with something other than JSON (a reverse proxy's 502 page, a
hub restarting) ended the nightly job with a Python traceback; now it prints
what it knows (the snapshot id, the status) and exits 1, as a refusal does."""

from __future__ import annotations

import argparse
import json

import httpx
import pytest

from hub import snapshot_cli


def test_a_progress_answer_that_is_not_json_exits_1_with_the_snapshot_id(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    sid = "0b7c5c1e-8a43-4f4e-9d0e-6a1d2b3c4d5e"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"snapshot_id": sid, "state": "comparing"})
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})

    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(answer), **kw))
    path = tmp_path / "list.ndjson"
    path.write_text('{"nhs_number": "9991100016", "entitled": true}\n')
    args = argparse.Namespace(api_key="k", url="http://hub", format="ndjson", timeout=5.0, poll=0.0, file=path)
    with pytest.raises(SystemExit) as exit_:
        snapshot_cli.send_snapshot(args)
    assert exit_.value.code == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["snapshot_id"], out["status"]) == (sid, 502)


@pytest.mark.parametrize("answer", [
    httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "application/json"}),
    httpx.Response(202, text="[]", headers={"Content-Type": "application/json"}),
    httpx.Response(202, json={"state": "receiving"}),
])
def test_a_post_answer_that_is_not_the_snapshot_exits_1_not_a_traceback(tmp_path, monkeypatch, capsys,  # noqa: ANN001
                                                                        answer: httpx.Response) -> None:
    """A proxy's page labelled JSON, a JSON that is not an object, an object with no snapshot id: what
    came and exit 1 (before: a JSONDecodeError, AttributeError or KeyError traceback)."""
    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(lambda _: answer), **kw))
    path = tmp_path / "list.ndjson"
    path.write_text('{"nhs_number": "9991100016", "entitled": true}\n')
    args = argparse.Namespace(api_key="k", url="http://hub", format="ndjson", timeout=5.0, poll=0.0, file=path)
    with pytest.raises(SystemExit) as exit_:
        snapshot_cli.send_snapshot(args)
    assert exit_.value.code == 1
    out = json.loads(capsys.readouterr().out)
    assert out.get("status") == answer.status_code or out.get("state") == "receiving"
