"""A library's own log text is not trusted with personal data
(hub/observability/logging.py `_foreign_text`).

python-hl7 logs the whole field it cannot unescape, a patient's surname in
PID-5 among them ("Error decoding hex value [zz], field [FOTHERINGAY\\Xzz\\]"),
and the redactor only masks ten-digit runs: that line reached the hub's log.
A library the hub has not read (any but uvicorn, aiokafka, httpx, ...) keeps
its message's template without its arguments, or nothing if it formatted the
message itself; the libraries read keep their text."""

from __future__ import annotations

import logging

import orjson

from hub.observability.logging import WITHHELD_TEXT, configure_logging


def _lines(capsys) -> list[dict]:  # noqa: ANN001
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_python_hl7_unescaping_a_name_logs_nothing_of_it(capsys, restore_logging) -> None:  # noqa: ANN001
    import hl7

    configure_logging("INFO")
    message = hl7.parse("MSH|^~\\&|A|RNU|B|HUB|202501061200||ADT^A01|M1|P|2.4\rPID|||9434765919^^^NHS||FOTHERINGAY\\Xzz\\^ANNE")
    name = message.segment("PID")[5]
    message.unescape(str(name))  # python-hl7 logs the bad hex escape with the field it is in
    out = capsys.readouterr().out
    assert out, "python-hl7 logged nothing: this test no longer shows the library's line"
    assert "FOTHERINGAY" not in out and "ANNE" not in out
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    # Its template, without the field: what went wrong, not whose name it was.
    assert lines and all(line["logger"] == "hl7/util.py" and "[%s]" in line["event"] for line in lines)


def test_a_librarys_template_is_kept_without_its_arguments_and_a_trusted_librarys_text_whole(
        capsys, restore_logging) -> None:  # noqa: ANN001
    configure_logging("INFO")
    logging.getLogger("somelib.parser").warning("could not read %s at %s", "SMITH", "1 High St")
    logging.getLogger("somelib.parser").warning("could not read SMITH")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s://%s:%d", "http", "127.0.0.1", 8117)
    lines = _lines(capsys)
    assert [line["event"] for line in lines] == [
        "could not read %s at %s", WITHHELD_TEXT, "Uvicorn running on http://127.0.0.1:8117"]
