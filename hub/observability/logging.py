"""structlog set-up: JSON to stdout, one correlation id per change, and an
allowlist redactor so that a field nobody has cleared is never printed.

Personal data (NHS number, names, dates of birth, addresses) must never reach
a log line. Rather than trying to recognise it, the redactor keeps only keys on
an allowlist; anything else is replaced by "[redacted]". A new field therefore
stays hidden until someone decides it may be shown and adds it here.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import UTC, datetime
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import orjson
import structlog

from hub.ids import uuid4

ALLOWED_KEYS = frozenset(
    {
        "event", "level", "timestamp", "logger",
        "correlation_id", "message_id", "event_id", "change_id", "person_id",
        "delivery_id", "subscription_id", "source", "topic", "offset", "group",
        "event_type", "change_type", "recipient", "org_code", "status", "status_code",
        "attempt", "next_attempt_in", "error_kind", "fields", "count", "path",
        "method", "duration_ms", "url_host", "mode", "database", "bus", "port",
        "decision", "agreement", "quarantine_id", "reason_codes", "exc_type",
        "lag", "breaches", "version", "channel", "event_number",
        "snapshot_id", "item_id", "rejected", "opened", "fixed", "reopened",
        "case_id", "file_id", "pid",
        "queued", "allowed", "denied", "unsubscribed",
        # one line for several deliveries (hub.delivery.webhook): parallel lists
        "delivery_ids", "event_ids", "correlation_ids", "recipients", "event_numbers", "attempts", "url_hosts",
        # one line for a dispatch batch's messages (hub.delivery.dispatcher), with the lists above
        # and `allowed`, `denied`, `unsubscribed`, `queued` as lists of counts
        "event_types",
        # `s117hub serve`'s processes at start (hub/cli.py): counts and "auto" / "set"
        "processes", "usable_cores", "chosen",
        # a transfer case withdrawn (hub/workflows/service.py: the state it was in, whether superseded),
        # an audit purge skipped (the checkpoint's seq), a council file withheld (its export id)
        "was", "superseded", "seq", "export_id",
        # settings at start: the database adapter's name, MLLP open to unauthenticated senders
        "adapter", "allow_unauthenticated",
        # the bank holiday calendar's last covered day and the days left to it (hub/refdata/bank_holidays.py)
        "covered_until", "days_left",
        # a GP practice reference dataset in use, the day it is as of, its age and the age alerted, and the
        # setting that names a newer file (hub/refdata/ods_files.py)
        "dataset", "as_of", "age_days", "max_age_days", "setting",
        # the data-sharing agreements file reloaded (hub/agreements_watch.py): counts and agreement ids,
        # or why the file was refused (its name, the entry and field; never a person)
        "grants", "agreements_added", "agreements_removed", "agreements_changed", "problem",
        # a Kafka cluster misconfigured (hub/bus/kafka_security.py): "bus" or "outbound"; the lifetime in
        # seconds of an OAUTHBEARER access token fetched (hub/bus/kafka_oauth.py; never the token)
        "cluster", "expires_in",
        # the reference data in use recorded at start (hub/refdata_retell.py): the first 16 hex digits of its
        # fingerprint (a hash of the data files, no person) and how many people its change was told of
        "fingerprint", "told",
        # a hospital site naming an abolished council, at start (hub/bootstrap.py `_report_hospital_sites`): the
        # site's ODS code, the council's GSS code, its vesting day, its successors' codes, who coordinates and
        # the file to update (codes of organisations only, no person)
        "site", "council", "abolished_on", "successors", "coordinating", "file",
    }
)
REDACTED = "[redacted]"
# Belt and braces: a ten-digit run (an NHS number) is masked even inside an
# allowed value, e.g. an exception text that quoted its input. A UUID (the
# hub's ids) is matched whole first and kept, unless it holds a bare run of
# ten digits (what a log scanner takes for an NHS number): a random id's
# "196923-0154" is not one, and a masked id can no longer be traced. The
# correlation ids the hub mints never hold such a run (`new_correlation_id`).
_BARE_TEN = re.compile(r"(?<!\d)\d{10}(?!\d)")
_TEN_DIGITS = re.compile(
    r"(?P<uuid>(?<![0-9a-fA-F-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![0-9a-fA-F-]))|(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def _mask_match(m: re.Match[str]) -> str:
    if m.group("uuid"):
        return _BARE_TEN.sub("[nhs-number]", m.group(0))
    return "[nhs-number]"


def new_correlation_id() -> str:
    """A UUID4 for a request or message without a usable correlation id of
    its own, drawn again (about 1 in 60) if it holds a bare run of ten digits,
    so that the log redactor never has to mask it and it can always be traced."""
    while True:
        value = uuid4()
        if not _BARE_TEN.search(value):
            return value


# Anything `_TEN_DIGITS` would change holds this (a UUID is changed only if
# it holds ten digits in a row): a value without it is returned as it is,
# without the substitution and its per-UUID callback (most values: ids, codes).
_HINT = re.compile(r"\d{3}[ -]?\d{3}[ -]?\d{4}")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) < 10 or _HINT.search(value) is None:
            return value
        return _TEN_DIGITS.sub(_mask_match, value)
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    return value


# Written by the chain's own processors, never from a caller's values: not scanned.
_GENERATED = frozenset({"level", "timestamp"})


def allowlist_redactor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key not in ALLOWED_KEYS:
            out[key] = REDACTED
        elif key in _GENERATED or (type(value) is str and (len(value) < 10 or _HINT.search(value) is None)):
            out[key] = value  # most values (ids, codes, counts as text): what `_mask` would give, without the call
        else:
            out[key] = _mask(value)
    return out


def _drop_exception_text(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Tracebacks can quote personal data from local variables or messages; keep
    # only the exception's type name.
    exc = event_dict.pop("exc_info", None)
    if exc:
        if exc is True:
            exc = sys.exc_info()
        if isinstance(exc, BaseException):
            event_dict["exc_type"] = type(exc).__name__
        elif isinstance(exc, tuple) and exc[0] is not None:
            event_dict["exc_type"] = exc[0].__name__
    event_dict.pop("exception", None)
    event_dict.pop("stack_info", None)
    return event_dict


class _StreamLogger:
    """structlog's PrintLogger, but one per stream name, looking the stream
    up at each line rather than when the logger is made: sys.stdout may be
    swapped (tests, daemons) and closed, and with `cache_logger_on_first_use`
    off a logger is made for every line (a PrintLogger and its lock look-up
    each time)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def msg(self, message: str) -> None:
        # One write of the line and its newline: `print` makes two, and the
        # hub's processes (S117_SEPARATE_WORKERS) share one stream, where
        # another process's line could come between them (a torn JSON line).
        stream = getattr(sys, self._name)
        with _WRITE_LOCK:
            try:
                stream.write(message + "\n")
                stream.flush()
            except OSError:
                # The log's disk is full (ENOSPC, EFBIG) or its reader gone: the line is lost, never the
                # work being logged (an MLLP message's ACK, a request's answer). Counted, and said once
                # writing works again.
                _LOST[0] += 1
                return
            if _LOST[0]:
                lost, _LOST[0] = _LOST[0], 0
                try:
                    stream.write(orjson.dumps({"event": "log lines lost: the log could not be written",
                                               "count": lost, "level": "warning",
                                               "timestamp": datetime.now(UTC).isoformat()}).decode() + "\n")
                    stream.flush()
                except OSError:
                    _LOST[0] += lost

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_WRITE_LOCK = threading.Lock()  # a line written from any thread stays whole
_LOST = [0]  # lines the stream refused since the last one written (`_StreamLogger.msg`)


def _current_stream_logger(name: str) -> Any:
    logger = _StreamLogger(name)

    def factory(*_args: Any) -> _StreamLogger:
        return logger

    return factory


# The correlation id of what is being handled (a request, an MLLP message, a
# council file): a context variable of the hub's own, so each task sees its
# own. Ingest reads it (`bound_correlation_id`, a tenth of a microsecond, where
# structlog's `get_contextvars` copies and walks the whole context), and
# `add_correlation_id` puts it on every log line made meanwhile.
# One variable for the process: a reload of this module (the tests' logging
# reset) keeps it, or modules holding the old helpers would bind one the
# reloaded processor does not read.
_CORRELATION_ID: ContextVar[str | None]
try:
    _CORRELATION_ID  # noqa: B018 - already made by an earlier load of this module
except NameError:
    _CORRELATION_ID = ContextVar("s117_correlation_id", default=None)


def bound_correlation_id() -> str | None:
    """The correlation id bound in this context, None if none is."""
    return _CORRELATION_ID.get()


def bind_correlation_id(correlation_id: str | None) -> Token[str | None]:
    """Bind `correlation_id` in this context (None: none, whatever was bound
    around it); `unbind_correlation_id(token)` gives back what was bound before."""
    return _CORRELATION_ID.set(correlation_id)


def unbind_correlation_id(token: Token[str | None]) -> None:
    _CORRELATION_ID.reset(token)


@contextmanager
def correlation_bound(correlation_id: str) -> Iterator[None]:
    token = _CORRELATION_ID.set(correlation_id)
    try:
        yield
    finally:
        _CORRELATION_ID.reset(token)


class RequestLine:
    """A request's own log line (hub/api/correlation.py), which may carry one
    other line's fields: a single register change accepted in the request
    (`carry_on_request_line`). A change sent alone over REST used to write two
    lines, `register change accepted` and then `request`, each about 35 us of
    the front's CPU in place (bench/JOURNAL.md, sixteenth and seventeenth
    sessions; 36 fewer Python calls a request); now it
    writes one, `register change accepted` with the request's `method`,
    `path`, `status_code` and `duration_ms` added."""

    __slots__ = ("correlation_id", "event", "fields", "open")

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.event: str | None = None
        self.fields: dict[str, Any] | None = None
        self.open = True  # False once the request's line is written: later lines go on their own


# The request line of what is being handled, if any (see `RequestLine`); one
# variable for the process, as `_CORRELATION_ID`.
_REQUEST_LINE: ContextVar[RequestLine | None]
try:
    _REQUEST_LINE  # noqa: B018 - already made by an earlier load of this module
except NameError:
    _REQUEST_LINE = ContextVar("s117_request_line", default=None)


def open_request_line(correlation_id: str) -> tuple[RequestLine, Token[RequestLine | None]]:
    line = RequestLine(correlation_id)
    return line, _REQUEST_LINE.set(line)


def close_request_line(line: RequestLine, token: Token[RequestLine | None]) -> None:
    line.open = False
    _REQUEST_LINE.reset(token)


def carry_on_request_line(event: str, fields: dict[str, Any]) -> bool:
    """Put `event` and its `fields` on the request's own line, to be written
    with it when the request ends: True if taken; False (the caller writes
    its line itself) outside a request, after its line was written (a task
    it started that outlives it), for a second line, or for another
    correlation id than the request's."""
    line = _REQUEST_LINE.get()
    if line is None or not line.open or line.event is not None \
            or fields.get("correlation_id") != line.correlation_id:
        return False
    line.event, line.fields = event, fields
    return True


def add_correlation_id(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The bound correlation id on the line, unless the call named one."""
    correlation_id = _CORRELATION_ID.get()
    if correlation_id is not None and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = correlation_id
    return event_dict


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        add_correlation_id,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_exception_text,
        allowlist_redactor,
    ]


# Libraries whose log messages the hub has read and that carry no personal
# data (servers, brokers, addresses): their text is kept, masked as the hub's
# own. Any other library's message is free text the hub cannot vouch for (a
# parser quoting the field it failed on: python-hl7 logs the whole PID-5 it
# could not unescape): only its template is kept, without its arguments, or,
# if it was formatted before logging, nothing of it.
_TRUSTED_LOGGERS = ("uvicorn", "aiokafka", "kafka", "httpx", "httpcore", "asyncio", "alembic", "sqlalchemy",
                    "hub", "s117hub", "adapters")
WITHHELD_TEXT = "message withheld: a library's free text"


def _foreign_text(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A library's own log record (not the hub's structlog lines): its text
    kept only from the trusted libraries above."""
    args = event_dict.pop("positional_args", ())  # the formatter's `pass_foreign_args`
    record = event_dict.get("_record")
    if record is None or event_dict.get("_from_structlog"):
        return event_dict
    name = record.name
    if name.split(".", 1)[0] in _TRUSTED_LOGGERS:
        return event_dict
    template = record.msg if isinstance(record.msg, str) else None
    event_dict["event"] = template if template and args else WITHHELD_TEXT
    # A logger named by its file (python-hl7's): the package and module, not the install path.
    event_dict["logger"] = "/".join(name.replace("\\", "/").split("/")[-2:]) if "/" in name else name
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o).decode())
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_current_stream_logger("stdout"),
        cache_logger_on_first_use=False,
    )
    # uvicorn and library logs go through the same chain (and the same redactor).
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_foreign_text, *shared_processors()[:-1]], pass_foreign_args=True,
        processors=[allowlist_redactor, structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "aiokafka", "httpx"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access logs print paths with query strings; the hub never puts personal
    # data in a URL, but we log requests ourselves with the allowlist instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str = "s117hub") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def logs_at(logger: Any, level: int) -> bool:
    """Whether `logger` (bound: `log.bind()`) writes lines at `level` (the
    process's level, fixed once logging is configured): a hot path can skip
    building a line nobody writes."""
    enabled = getattr(logger, "is_enabled_for", None)
    return enabled(level) if callable(enabled) else True


_WRITES_AT: dict[tuple[Any, int], bool] = {}  # (structlog's configured wrapper class, level) -> written


def writes_at(level: int) -> bool:
    """Whether the hub's loggers write lines at `level`: `logs_at` of a
    logger, known once per configured wrapper class (structlog's filtering
    class is the level; configuring again makes a new class). Without a
    bound logger to hand, a line's arguments can be skipped for nothing
    (structlog makes a logger for each call: about 2.4 us for a dropped line)."""
    key = (structlog.get_config()["wrapper_class"], level)
    got = _WRITES_AT.get(key)
    if got is None:
        got = _WRITES_AT[key] = logs_at(structlog.get_logger().bind(), level)
    return got


def _safe_default() -> None:
    # Until configure_logging() runs (a library user, a script, a benchmark),
    # structlog's own default chain would print every field as given. Install
    # the redacting chain from the start so that no path bypasses it.
    if not structlog.is_configured():
        structlog.configure(
            processors=[*shared_processors(), structlog.dev.ConsoleRenderer(colors=False)],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=_current_stream_logger("stderr"),
            cache_logger_on_first_use=False,
        )


_safe_default()
