"""HL7 v2 over MLLP: trusts push ADT messages; each is mapped (adapters/hl7v2),
taken through the same ingest as REST, and answered with an ACK only once the
change (or its quarantine) is committed.

Framing is a small sans-IO framer (`MllpFramer`), kept apart from parsing.
python-hl7's `hl7.mllp` streams were not used: their reader treats bytes
before the start block as part of the block and raises `InvalidBlockError`,
losing the good frame that follows garbage, its `readmessage` parses inside
the framing layer, and it is built around a deprecated `get_event_loop` call.

MLLP has no authentication: the source is named by MSH-4 (sending facility).
Listen only on a network the trusts' interface engines alone can reach
(`S117_MLLP_HOST` defaults to loopback).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.hl7v2 import Disposition, Header, HL7Problem, MappingResult, build_ack, map_adt
from adapters.hl7v2.ack import MSA_TEXT_LIMIT
from adapters.hl7v2.mapping import (ADMISSION_KIND_POSITION, APPLICATION_ERROR, CTO_RECALL, FRESH_APPLICATION,
                                    UNSUPPORTED_EVENT_CODE)
from hub.access import no_sooner_than
from hub.domain.access import TEXTS, Rule
from hub.ids import uuid4
from hub.ingest.service import Client, IngestService, Outcome
from hub.ingest.validation import FieldProblem
from hub.ingest.nhs_number import nhs_number_problem
from hub.observability.logging import (bind_correlation_id, bound_correlation_id, get_logger, new_correlation_id,
                                       unbind_correlation_id)
from hub.settings import Settings
from hub.store.db import STORE_FAULTS, Prepared, execute_prepared, snapshot, store_fault
from hub.merges import MergeDenied, MergeRefused, PersonMergeService
from hub.retraction import (CANCEL_ALREADY, CANCEL_AMBIGUOUS, CANCEL_KEY_REUSED, CANCEL_RETRACTED, Cancellation,
                            RetractionService)
from hub.store.schema import api_clients

log = get_logger("hub.mllp")

# One ACK text for "not on the register" and "not in this trust's care".
NO_RELATIONSHIP_ACK = "no register change: " + TEXTS[Rule.NO_RELATIONSHIP]
# A qualifying detention without ZU5-8 that would end the CTO the register shows the person on (a recall or a
# fresh application cannot be told from the legal status: adapters/hl7v2/README.md): AE naming ZU5-8 (the
# canonical change type's origin), quarantined, nothing recorded (IngestService.accept_mapped `cto_question`).
CTO_QUESTION = FieldProblem("change_type", (
    "is required: the person is on a community treatment order, so this detention "
    f"may be a recall under MHA s17E ({ADMISSION_KIND_POSITION} {CTO_RECALL}: the CTO stays in force) or a fresh "
    f"application or order ({ADMISSION_KIND_POSITION} {FRESH_APPLICATION}: it ends the CTO, s6(4), s17C(c)); "
    "send the message again saying which; nothing was recorded"))
START_BLOCK = 0x0B
END_BLOCK = b"\x1c\x0d"
_FS, _CR = 0x1C, 0x0D
CHANNEL = "mllp"
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
INTERNAL_ERROR = "207"  # HL7 table 0357: application internal error
SOURCE_TTL = 5.0  # seconds a sending facility's trust client is remembered
# S117_WRITE_REFUSAL_FLOOR_MS's default, in seconds (REST and FHIR read the setting itself).
DEFAULT_REFUSAL_FLOOR = Settings.model_fields["write_refusal_floor_ms"].default / 1000
_SOURCE_CLIENTS = Prepared(
    select(api_clients).where(api_clients.c.org_code == bindparam("facility"), api_clients.c.org_kind == "trust",
                              api_clients.c.active.is_(True))
    .order_by(api_clients.c.created_at, api_clients.c.client_id))


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversize:
    head: bytes  # the frame's first bytes, for the MSH of the AR


class MllpFramer:
    """Bytes in, frames out. Bytes outside a frame are dropped; a start block
    inside an open frame starts again there (the sender gave up the first);
    a frame longer than `max_frame_bytes` yields `Oversize` once.

    A frame ends at its FS (0x1C), a byte HL7 text never holds: the CR the
    protocol puts after it is dropped when it comes, not waited for. A sender
    that ends its frames with FS alone (not MLLP, but some engines do) is
    answered too, where its frame used to wait for a CR that never came and
    the next start block threw it away unanswered."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._after_end = False  # a frame just ended at its FS: the CR after it is the end block's own
        self.discarded = 0  # bytes dropped outside frames

    @property
    def in_frame(self) -> bool:
        """A start block has been seen and its frame is not complete yet."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Oversize]:
        self._buf += data
        out: list[Frame | Oversize] = []
        while True:
            if not self._in_frame:
                if self._after_end and self._buf:
                    self._after_end = False
                    if self._buf[0] == _CR:
                        del self._buf[:1]
                start = self._buf.find(START_BLOCK)
                if start < 0:
                    self.discarded += len(self._buf)
                    self._buf.clear()
                    return out
                self.discarded += start
                del self._buf[: start + 1]
                self._in_frame = True
            end = self._buf.find(_FS)
            restart = self._buf.find(START_BLOCK)
            if restart >= 0 and (end < 0 or restart < end):
                self.discarded += restart
                del self._buf[: restart + 1]
                continue
            if end < 0:
                if len(self._buf) > self.max_frame_bytes:
                    out.append(Oversize(bytes(self._buf[:4096])))
                    self._buf.clear()
                    self._in_frame = False
                return out
            if end > self.max_frame_bytes:
                out.append(Oversize(bytes(self._buf[:4096])))
            else:
                out.append(Frame(bytes(self._buf[:end])))
            del self._buf[: end + 1]
            self._in_frame = False
            self._after_end = True


def frame(message: str | bytes) -> bytes:
    data = message.encode() if isinstance(message, str) else message
    return bytes([START_BLOCK]) + data + END_BLOCK


# A UTF-8 byte order mark some engines (and files saved on Windows) put before the MSH: not HL7, but with it
# the message could not be read at all and its ACK had no MSA-2 for the sender to match. Dropped before reading.
_UTF8_BOM = b"\xef\xbb\xbf"


def _decode(payload: bytes) -> str:
    if payload[:3] == _UTF8_BOM:
        payload = payload[3:]
    # Without MSH-18 (`_decode_declared` reads it; ITK sends UNICODE, UTF-8),
    # and for the MSH of an ACK only: anything that is not UTF-8 is read as
    # Latin-1 rather than refused, so the MSH can still be read and answered.
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


# HL7 table 0211 (MSH-18, the message's character set): the values taken, and the codec each is read with.
_CHARSETS = {b"8859/1": "latin-1", b"UNICODE UTF-8": "utf-8", b"UNICODE": "utf-8", b"ASCII": "ascii"}
_UNSUPPORTED_CHARSET = "103"  # HL7 table 0357: table value not found
_BAD_BYTES = "102"  # HL7 table 0357: data type error


def _msh18(payload: bytes) -> bytes:
    """MSH-18's first repetition, read from the bytes before anything is decoded (the MSH's field
    separator is its byte 3, the repetition separator MSH-2's second); empty when there is none."""
    if payload[:3] != b"MSH" or len(payload) < 6:
        return b""
    end = payload.find(b"\r")
    if end < 0:
        end = len(payload)
    newline = payload.find(b"\n", 0, end)  # an LF-separated message (mapping.py turns LF into CR)
    if newline >= 0:
        end = newline
    fields = payload[:end].split(payload[3:4], 18)
    if len(fields) < 18:
        return b""
    return fields[17].split(payload[5:6], 1)[0].strip().upper()


def _decode_declared(payload: bytes) -> tuple[str, HL7Problem | None]:
    """The message's text, read in the character set MSH-18 names (table 0211), and a problem naming
    MSH-18 when it names one the hub does not take or the bytes are not valid in it (the text is then
    read as `_decode` reads it, for the header of the AR). Without MSH-18: `_decode`. A UTF-8 byte order
    mark before the MSH is dropped first, whatever MSH-18 says."""
    if payload[:3] == _UTF8_BOM:
        payload = payload[3:]
    declared = _msh18(payload)
    if not declared:
        return _decode(payload), None
    codec = _CHARSETS.get(declared)
    if codec is None:
        return _decode(payload), HL7Problem(
            "MSH-18", "names a character set the hub does not take (HL7 table 0211: 8859/1, UNICODE UTF-8, "
            "UNICODE or ASCII)", _UNSUPPORTED_CHARSET)
    try:
        return payload.decode(codec), None
    except UnicodeDecodeError:
        return _decode(payload), HL7Problem(
            "MSH-18", f"the message's bytes are not valid in the character set it names ({codec})", _BAD_BYTES)


def certificate_org(peercert: dict | None) -> str | None:
    """The subject commonName of a verified client certificate: the sending
    trust's ODS code."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def server_tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """TLS 1.2+ for MLLP; with `client_ca`, clients must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True, slots=True)
class MllpLimits:
    """What one MLLP listener allows (settings `S117_MLLP_*`)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    read_timeout: float = 30.0  # a started frame must be complete by then (slow senders)
    idle_timeout: float = 30.0  # no frame in progress for this long: the connection is closed
    max_connections: int = 200  # open connections in total ...
    max_per_peer: int = 10  # ... and from one peer address; extra ones are closed at once
    handshake_timeout: float = 10.0  # TLS handshake, after the connection is counted
    # An access-policy refusal (the no-relationship AA, an AR naming the rule) is answered no sooner
    # than this after the message was taken up (S117_WRITE_REFUSAL_FLOOR_MS, as REST and FHIR): one that
    # read and evaluated a person's history cannot be told by time from one about a number not on the
    # register. Waited for with asyncio.sleep: the connection's next message waits, no other does.
    refusal_floor: float = DEFAULT_REFUSAL_FLOOR


class ReadDeadline:
    """A connection's reads, each by a deadline (None once it passes with
    nothing read), as `asyncio.timeout_at` around each read would give, with
    one timer for the connection rather than one made and cancelled per read
    (`asyncio.timeout_at` costs about 8 us, a read a message). The deadline
    usually moves later from one read to the next (it counts from the last
    ACK): the timer is then left where it is, and when it fires early it is
    set again for the deadline now in force. Only a wait for bytes is cut
    short: bytes already buffered are returned, whatever the time. `close`
    cancels the timer."""

    __slots__ = ("_loop", "_task", "_at", "_timer", "_timer_at", "_reading", "_expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        self._loop = loop
        self._task = task
        self._at = 0.0  # the deadline in force (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the timer fires
        self._reading = False
        self._expired = False

    async def read(self, reader: asyncio.StreamReader, deadline: float) -> bytes | None:
        self._at = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self._loop.call_at(deadline, self._fire), deadline
        task = self._task
        cancelling = task.cancelling()
        self._reading = True
        try:
            return await reader.read(65536)
        except asyncio.CancelledError:
            # Ours (and nobody else's, as asyncio.timeout tells them apart): the deadline passed.
            if self._expired and task.uncancel() <= cancelling:
                return None
            raise
        finally:
            self._reading = self._expired = False

    def _fire(self) -> None:
        self._timer = None
        if self._loop.time() < self._at:  # the deadline moved on since the timer was set
            self._timer, self._timer_at = self._loop.call_at(self._at, self._fire), self._at
        elif self._reading and not self._expired:
            self._expired = True
            self._task.cancel()
        # else: between reads (a message being handled): the next read sets the timer again

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class MllpServer:
    def __init__(self, engine: AsyncEngine, ingest: IngestService, host: str, port: int,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, drain_seconds: float = 10.0,
                 tls: ssl.SSLContext | None = None, limits: MllpLimits | None = None,
                 retractions: RetractionService | None = None, merges: PersonMergeService | None = None) -> None:
        self._engine = engine
        # A40 merges two NHS numbers through it (`_merge`); without it, every A40 is held in quarantine.
        self._merges = merges
        # A11 / A13 retract the one change they cancel through it (`_cancel`); without it (a listener
        # built without one), every cancellation is held in quarantine for review.
        self._retractions = retractions
        # MLLP over TLS: with a context that requires client certificates, the
        # certificate (its subject CN, the trust's ODS code) says who is
        # sending, and MSH-4 must agree with it.
        self._tls = tls
        self._ingest = ingest
        self.limits = limits or MllpLimits(max_frame_bytes=max_frame_bytes)
        self._max = self.limits.max_frame_bytes
        self._drain_seconds = drain_seconds
        # Bound now, synchronously: a port in use fails the hub's start-up
        # instead of a background task dying quietly.
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=512)
        self.port = self._sock.getsockname()[1]
        self._connections: dict[asyncio.Task, bool] = {}  # task -> busy with a message
        self._per_peer: Counter[str] = Counter()
        # Sending facility -> (expires, trust client): an interface engine sends
        # thousands of messages a minute from one facility; as for API keys
        # (hub/clients.py), a client made inactive stops within SOURCE_TTL seconds.
        self._sources: dict[str, tuple[float, Client]] = {}
        self._looking_up: dict[str, asyncio.Future[Client | None]] = {}  # facility -> its read in flight
        self.refused = 0  # connections closed at once for being over a cap

    async def serve(self, stop: asyncio.Event) -> None:
        # TLS is started per connection, after the caps are checked: a peer
        # over its cap costs no handshake, and a handshake has a deadline.
        server = await asyncio.start_server(self._connection, sock=self._sock)
        log.info("mllp listening", port=self.port)
        try:
            await stop.wait()
        finally:
            server.close()
            await self._drain()
            log.info("mllp stopped", port=self.port)

    async def _drain(self) -> None:
        """Idle connections close now; one mid-message finishes (commit and
        ACK) first, or is cancelled after `drain_seconds` (its transaction rolls
        back and no ACK is sent, so the sender sends it again)."""
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        pending = list(self._connections)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._drain_seconds)
            for task in still:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _admit(self, peer: str) -> bool:
        if len(self._connections) >= self.limits.max_connections or self._per_peer[peer] >= self.limits.max_per_peer:
            self.refused += 1
            return False
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if not self._admit(peer):
            # Over a cap: closed at once, before any read or TLS handshake, so
            # idle connections cannot use up the process's file descriptors.
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("mllp connection refused: over the connection cap", count=self.refused,
                            status="refused", channel=CHANNEL)
            writer.transport.abort()
            return
        self._connections[task] = False
        self._per_peer[peer] += 1
        framer = MllpFramer(self._max)
        messages = 0
        reads: ReadDeadline | None = None
        try:
            if self._tls is not None:
                await writer.start_tls(self._tls, ssl_handshake_timeout=self.limits.handshake_timeout)
            peer_org = certificate_org(writer.get_extra_info("peercert"))
            loop = asyncio.get_running_loop()
            reads = ReadDeadline(loop, task)
            # Deadlines: with no frame open, the next must start within
            # idle_timeout of the last ACK (or of connecting): bytes outside
            # frames do not keep a connection alive. A started frame must end
            # within read_timeout of its start, however slowly it trickles in.
            idle_since, frame_started = loop.time(), 0.0
            while True:
                timeout = (frame_started + self.limits.read_timeout if framer.in_frame
                           else idle_since + self.limits.idle_timeout)
                data = await reads.read(reader, timeout)
                if data is None:
                    log.info("mllp connection timed out", status="timeout", channel=CHANNEL,
                             mode="read" if framer.in_frame else "idle")
                    break
                if not data:
                    break
                was_in_frame = framer.in_frame
                items = framer.feed(data)
                if framer.in_frame and not was_in_frame:
                    frame_started = loop.time()  # a frame opened in these bytes
                for item in items:
                    self._connections[task] = True
                    try:
                        if isinstance(item, Oversize):
                            await self._answer(writer, self._oversize_ack(item))
                            log.warning("mllp frame over the size limit; connection closed",
                                        count=self._max, status="AR")
                            await self._linger(reader, writer)
                            return
                        ack = await self.handle(item.payload, peer_org)
                        await self._answer(writer, ack)
                        messages += 1
                    finally:
                        self._connections[task] = False
                if items:  # answered: the idle clock, and any frame already open, start now
                    idle_since = frame_started = loop.time()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError, OSError):
            pass  # the sender went away or stalled; anything un-ACKed it will send again
        except asyncio.CancelledError:
            # The hub stopping (`_drain`): the connection closes below, anything un-ACKed is sent again.
            # Ended, not raised on: asyncio's server (3.11) logs a connection task that ends cancelled
            # as an error, one a connection at every stop.
            pass
        finally:
            if reads is not None:
                reads.close()
            self._connections.pop(task, None)
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
            if framer.discarded:
                log.info("mllp bytes outside frames dropped", count=framer.discarded)
            log.info("mllp connection closed", count=messages)
            writer.close()
            try:
                async with asyncio.timeout(self.limits.read_timeout):
                    await writer.wait_closed()
            except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                writer.transport.abort()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float = 2.0) -> None:
        # Closing with the rest of the oversize frame unread would reset the
        # connection, and the sender could lose the AR already sent: say we
        # are done, then read and drop what is still coming for a moment.
        if writer.can_write_eof():
            writer.write_eof()
        try:
            async with asyncio.timeout(seconds):
                while await reader.read(65536):
                    pass
        except TimeoutError:
            pass

    async def _answer(self, writer: asyncio.StreamWriter, ack: str) -> None:
        writer.write(_START + ack.encode() + END_BLOCK)  # frame(ack)
        transport = writer.transport
        # Usually the socket takes the whole ACK at once: nothing to wait for.
        # Otherwise a sender that does not read its ACKs cannot hold the connection.
        if transport.get_write_buffer_size() or transport.is_closing():
            async with asyncio.timeout(self.limits.read_timeout):
                await writer.drain()

    def _oversize_ack(self, item: Oversize) -> str:
        header = map_adt(_decode(item.head).split("\r", 1)[0]).header  # MSH only, for MSA-2
        return self._ack(header, "AR", "message exceeds the size limit; connection closed",
                         [HL7Problem("MSH", f"the framed message is longer than {self._max} bytes", APPLICATION_ERROR)])

    async def handle(self, payload: bytes, peer_org: str | None = None) -> str:
        """One framed message -> its ACK text, after everything is durable.
        `peer_org`: the ODS code in the sender's TLS client certificate, if any."""
        token = bind_correlation_id(uuid4())
        try:
            return await self._handle(payload, peer_org)
        except Exception as exc:  # noqa: BLE001 - every message gets an ACK, never a dropped connection
            # A fault of ours (the store down, a bug): nothing was committed.
            # AE, so the engine holds the message and can send it again, rather
            # than a dropped connection it would re-send for ever.
            # A store fault (its disk full, read-only, locked past the wait) is named, as REST's 503 names it.
            fault = store_fault(exc)
            log.error("mllp message failed inside the hub; answered AE", exc_type=type(exc).__name__,
                      status="AE", channel=CHANNEL, **({"error_kind": fault} if fault else {}))
            return self._failure_ack(payload, STORE_FAULTS[fault] if fault else None)
        finally:
            unbind_correlation_id(token)

    def _failure_ack(self, payload: bytes, cause: str | None = None) -> str:
        try:
            header = map_adt(_decode(payload).split("\r", 1)[0]).header
        except Exception:  # noqa: BLE001 - even an unreadable MSH gets an ACK
            header = Header()
        return self._ack(header, "AE", ("the hub could not process the message" + (f": {cause}" if cause else "")
                                        + "; nothing was recorded; send it again later"),
                         [HL7Problem("MSH", cause or "internal error in the hub", INTERNAL_ERROR)])

    async def _handle(self, payload: bytes, peer_org: str | None = None) -> str:
        started = time.monotonic()
        text, charset_problem = _decode_declared(payload)
        result = map_adt(text)
        header = result.header
        if not result.parsed:
            log.info("mllp message rejected", status="AR", reason_codes=["unparseable"], channel=CHANNEL)
            return self._ack(header, "AR", result.problems[0].reason, result.problems)
        if charset_problem is not None:  # nothing of a message that cannot be read as sent is kept
            log.info("mllp message rejected", status="AR", reason_codes=["charset"], channel=CHANNEL)
            return self._ack(header, "AR", charset_problem.reason, [charset_problem])
        if self._tls is not None and self._tls.verify_mode == ssl.CERT_REQUIRED and peer_org != header.sending_facility:
            log.info("mllp message rejected", status="AR", reason_codes=["facility-not-certificate"],
                     org_code=(peer_org or "")[:16], channel=CHANNEL)
            return self._ack(header, "AR", "sending facility does not match the client certificate",
                             [HL7Problem("MSH-4", "does not match the organisation in the TLS client certificate",
                                         "204")])
        client = await self._source(header.sending_facility)
        if client is None:
            # MSH-4 as an engine sent it, logged only when it has the form of an ODS code (a misconfigured
            # engine can put anything there, a patient's name included).
            facility = header.sending_facility
            log.info("mllp message rejected", status="AR", reason_codes=["facility-not-registered"],
                     org_code=facility if _ODS_FORM.fullmatch(facility) else "(not an ODS code)", channel=CHANNEL)
            return self._ack(header, "AR", "sending facility not registered",
                             [HL7Problem("MSH-4", "sending facility not registered with the hub as a trust "
                                                  "with register:write", "204")])
        if result.disposition is Disposition.REJECT:
            if result.quarantine:
                # A11 / A13: the access policy first, asked about what the message cancels (as for a message
                # that does not map, below): nothing of one about someone the trust has no role for is kept.
                if self._retractions is not None:
                    return await self._cancel(client, payload, header, result, started)
                return await self._quarantined(client, payload, header, result, started, "AR",
                                               result.problems[0].reason)
            log.info("mllp message rejected", source=client.client_id, status="AR",
                     reason_codes=[p.code for p in result.problems], channel=CHANNEL)
            return self._ack(header, "AR", result.problems[0].reason, result.problems)
        if result.disposition is Disposition.NO_CHANGE:
            log.info("mllp message accepted without a register change", source=client.client_id, status="AA",
                     channel=CHANNEL)
            return self._ack(header, "AA", "no register change: " + "; ".join(result.notes))
        if result.disposition is Disposition.MERGE:
            return await self._merge(client, payload, header, result, started)
        if result.disposition is Disposition.ERROR:
            # The access policy first, as for a change that maps (below): a message about someone the trust
            # has no role for is answered as a well-formed one would be, and nothing of it is kept.
            return await self._quarantined(client, payload, header, result, started, "AE", "register change rejected")
        assert result.change is not None
        # The access policy before validation. Trusts' interface engines send
        # every discharge and update, most of them for people never detained
        # under the Act: keep no personal details of people the trust has no
        # role for (data minimisation). Someone not on the register and
        # someone in another trust's care get one identical ACK.
        refused = await self._ingest.write_precheck(client, result.change, CHANNEL)
        if refused is not None:
            return await self._refusal_ack(header, result, refused, started)
        outcome = await self._ingest.accept_mapped(client, result.change, payload, CHANNEL, prechecked=True,
                                                   source_field=result.hl7_field,
                                                   cto_question=CTO_QUESTION if result.recall_unstated else None)
        if outcome.status_code == 403:  # refused on the record path, under the person's lock
            return await self._refusal_ack(header, result, outcome, started)
        return self._outcome_ack(header, result, outcome)

    async def _quarantined(self, client: Client, payload: bytes, header: Header, result: MappingResult,
                           started: float, code: str, text: str) -> str:
        """A message that did not map, kept in quarantine and answered `code` naming its problems; unless
        the access policy refuses the trust for the person it is about (`result.about`): then the
        refusal's answer, and nothing of it kept."""
        if result.about is not None:
            refused = await self._ingest.write_precheck(client, result.about, CHANNEL)
            if refused is not None:
                return await self._refusal_ack(header, result, refused, started)
        return await self._hold(client, payload, header, code, text, result.problems)

    async def _hold(self, client: Client, payload: bytes, header: Header, code: str, text: str,
                    problems: tuple[HL7Problem, ...] | list[HL7Problem]) -> str:
        # The same message again (an engine retrying its AE) gets the first one's quarantine id, held once
        # (IngestService._held_copy).
        outcome = await self._ingest.reject_unmapped(
            client, payload, CHANNEL, [FieldProblem(p.field, p.reason) for p in problems], header.control_id)
        return self._ack(header, code, text, problems, quarantine_id=outcome.body.get("quarantine_id"))

    async def _cancel(self, client: Client, payload: bytes, header: Header, result: MappingResult,
                      started: float) -> str:
        """An A11 (cancel admit) or A13 (cancel discharge): the access policy first, as for any message
        (`_quarantined`); then the one change it cancels retracted, as `POST .../retraction` retracts it
        (hub/retraction.py `retract_cancelled`): the person (PID-3), the change type, recorded by this trust's
        organisation, the date (A11: ZU5-5, PV1-44 or EVN-6; an A11 with ZU5-8 `cto-recall`, cancelling a
        recall: PV1-44, ZU5-5 or EVN-6; A13: PV1-45 or EVN-6) and the hospital
        (PV1-3.4, PV1-39 or MSH-4) the message gives. `AA` naming the change retracted (or retracted before);
        no such change, or more than one: `AR`, held in quarantine for review, naming why."""
        about = result.about or {}
        cancels = about.get("change_type")
        if result.about is not None:
            refused = await self._ingest.write_precheck(client, result.about, CHANNEL)
            if refused is not None:
                return await self._refusal_ack(header, result, refused, started)
        admit = cancels in ("detained", "cto-recalled")  # an A11 (cancel admit), else an A13
        event = "A11 (cancel admit)" if admit else "A13 (cancel discharge)"
        what = {"detained": "detention", "cto-recalled": "CTO recall"}.get(cancels or "", "discharge")
        date_field = result.origins.get("effective_date", "EVN-6")
        nhs = (about.get("person") or {}).get("nhs_number")
        if nhs is None or nhs_number_problem(nhs) is not None:
            why = "does not name one valid NHS number: the change it cancels cannot be found"
            return await self._hold_cancel(client, payload, header, event, "no valid NHS number (PID-3)",
                                           HL7Problem("PID-3", why, APPLICATION_ERROR), "no-nhs-number")
        if result.cancelled_on is None:
            why = f"holds no valid date: the {what} it cancels cannot be found"
            return await self._hold_cancel(client, payload, header, event, f"no valid date ({date_field})",
                                           HL7Problem(date_field, why, APPLICATION_ERROR), "no-date")
        kind = "cancel admit" if admit else "cancel discharge"
        cancel = Cancellation(message_id=header.control_id, change_type=cancels, nhs_number=nhs,
                              effective_date=result.cancelled_on, hospital_ods=about.get("hospital_ods"),
                              reason=f"HL7 {header.trigger_event} {kind} {header.control_id}"[:1000])
        assert self._retractions is not None
        done = await self._retractions.retract_cancelled(client, cancel, bound_correlation_id() or new_correlation_id(),
                                                         CHANNEL)
        if done.status in (CANCEL_RETRACTED, CANCEL_ALREADY):
            log.info("mllp cancellation applied", source=client.client_id, status="AA", change_id=done.change_id,
                     reason_codes=[done.status], channel=CHANNEL)
            text = "register change " + ("retracted" if done.status == CANCEL_RETRACTED else "already retracted")
            return self._ack(header, "AA", f"{text}: {done.change_id}")
        if done.status == CANCEL_KEY_REUSED:
            log.info("mllp message rejected", source=client.client_id, status="AE", reason_codes=["key-reused"],
                     channel=CHANNEL)
            return self._ack(header, "AE", "register change rejected", [HL7Problem(
                "MSH-10", "was already used by this source for a different message; nothing was recorded",
                APPLICATION_ERROR)])
        hospital = result.origins.get("hospital_ods", "PV1-3.4")
        matched_on = f"the person (PID-3), the hospital ({hospital}) and the date ({date_field})"
        found = f"{'more than one' if done.status == CANCEL_AMBIGUOUS else 'no'} {what} recorded by this trust matches"
        return await self._hold_cancel(client, payload, header, event, found,
                                       HL7Problem("MSH-9", f"{found} {matched_on}", APPLICATION_ERROR), done.status)

    async def _merge(self, client: Client, payload: bytes, header: Header, result: MappingResult,
                     started: float) -> str:
        """An A40 (merge patient): PID-3's NHS number retained, MRG-1's superseded, merged as `POST
        /v1/persons/merge` merges them (hub/merges.py), under the one access policy (this trust needs a role
        for every hub person joined). `AA` once merged (the same merge again: `AA`, duplicate); refused for
        what it asks: `AE` naming the field (MRG-1, PID-3, PID-7), held in quarantine; refused by the policy:
        the answer any message about someone the trust has no role for gets, nothing kept."""
        numbers = result.merge or {}
        if self._merges is None:
            return await self._hold(client, payload, header, "AR", "A40 (merge patient) cannot be applied by "
                                    "this listener; held in quarantine for review",
                                    [HL7Problem("MSH-9", "no merge service", UNSUPPORTED_EVENT_CODE)])
        try:
            done = await self._merges.merge(client, numbers.get("retained", ""), numbers.get("superseded", ""),
                                            bound_correlation_id() or new_correlation_id(), CHANNEL)
        except MergeRefused as exc:
            log.info("mllp message rejected", source=client.client_id, status="AE", reason_codes=["merge-refused"],
                     channel=CHANNEL)
            return await self._hold(client, payload, header, "AE", "merge rejected",
                                    [HL7Problem(exc.field, exc.reason, APPLICATION_ERROR)])
        except MergeDenied as exc:
            await no_sooner_than(started, self.limits.refusal_floor)
            rule = exc.decision.rule
            log.info("mllp merge refused by the access policy", source=client.client_id,
                     reason_codes=[rule.value], channel=CHANNEL)
            if rule is Rule.NO_RELATIONSHIP:
                return self._ack(header, "AA", NO_RELATIONSHIP_ACK)
            return self._ack(header, "AR", f"refused by the access policy ({rule.value})",
                             [HL7Problem("MSH-4", f"{rule.value}: {exc.text}", APPLICATION_ERROR)])
        log.info("mllp merge applied", source=client.client_id, status="AA", person_id=done.body["retained_person_id"],
                 event_id=done.body["event_id"], channel=CHANNEL)
        text = "NHS numbers merged" + (" (duplicate)" if done.duplicate else "")
        return self._ack(header, "AA", f"{text}: person {done.body['retained_person_id'] or '(none yet)'}")

    async def _hold_cancel(self, client: Client, payload: bytes, header: Header, event: str, found: str,
                           problem: HL7Problem, reason_code: str) -> str:
        """AR, the message held in quarantine: MSA-3 says why in short (within its 200 characters with the
        quarantine id), the ERR (and the quarantine entry) in full."""
        text = f"{event}: {found}; no cancellation applied, held in quarantine for review"
        log.info("mllp cancellation held", source=client.client_id, status="AR", reason_codes=[reason_code],
                 channel=CHANNEL)
        return await self._hold(client, payload, header, "AR", text, [problem])

    async def _refusal_ack(self, header: Header, result: MappingResult, refused: Outcome, started: float) -> str:
        """The ACK of an access-policy refusal, no sooner than the floor after `started` (only these wait:
        an accepted or rejected message is answered as soon as it is committed)."""
        await no_sooner_than(started, self.limits.refusal_floor)
        return self._outcome_ack(header, result, refused)

    def _outcome_ack(self, header: Header, result: MappingResult, outcome: Outcome) -> str:
        if outcome.status_code == 403:
            rule = outcome.body.get("rule")
            if rule == Rule.NO_RELATIONSHIP:
                # AA, as for any message that changes nothing on the register:
                # an engine must not alert on, or re-send, a routine discharge.
                return self._ack(header, "AA", NO_RELATIONSHIP_ACK)
            problems = [HL7Problem(result.hl7_field(e["field"]), f"{rule}: {e['reason']}", APPLICATION_ERROR)
                        for e in outcome.body.get("errors", [])]
            return self._ack(header, "AR", f"refused by the access policy ({rule})", problems)
        if outcome.status_code == 202:
            text = "register change accepted" + (" (duplicate)" if outcome.body.get("duplicate") else "")
            if result.notes:
                text += "; " + "; ".join(result.notes)
            return self._ack(header, "AA", text)
        problems = [
            HL7Problem(result.hl7_field(e["field"]), f"({e['field']}) {e['reason']}", _code_for(e["reason"]))
            for e in outcome.body.get("errors", [])
        ] or [HL7Problem("MSH", outcome.body.get("detail", "rejected"), APPLICATION_ERROR)]
        return self._ack(header, "AE", "register change rejected", problems,
                         quarantine_id=outcome.body.get("quarantine_id"))

    def _ack(self, header: Header, code: str, text: str, problems: list[HL7Problem] | tuple[HL7Problem, ...] = (),
             quarantine_id: str | None = None) -> str:
        if quarantine_id:  # kept whole: MSA-3 is cut at its limit, and the id is what the trust looks up
            suffix = f"; quarantine id {quarantine_id}"
            text = text[:MSA_TEXT_LIMIT - len(suffix)] + suffix
        return build_ack(header, code, _ack_control_id(), _this_second(), text, problems)

    async def _source(self, facility: str) -> Client | None:
        """The trust client whose org_code is the sending facility. Several
        (a REST and an MLLP key, say): the oldest, so the idempotency source
        stays the same from message to message."""
        if not facility:
            return None
        held = self._sources.get(facility)
        if held is not None and held[0] > time.monotonic():
            return held[1]
        # One read per facility at a time: an engine's connections all find the
        # remembered client expired at once, and wait for the one read.
        pending = self._looking_up.get(facility)
        if pending is None:
            pending = self._looking_up[facility] = asyncio.ensure_future(self._look_up(facility))
            pending.add_done_callback(lambda _f: self._looking_up.pop(facility, None))
        return await asyncio.shield(pending)

    async def _look_up(self, facility: str) -> Client | None:
        async with snapshot(self._engine) as conn:  # SQLite: inline on the loop, no thread hop
            rows = (await execute_prepared(conn, _SOURCE_CLIENTS, {"facility": facility})).all()
        for row in rows:
            if "register:write" in row.scopes:
                client = Client(row.client_id, row.name, row.org_code, row.org_kind, tuple(row.scopes))
                if len(self._sources) > 10_000:
                    self._sources.clear()
                self._sources[facility] = (time.monotonic() + SOURCE_TTL, client)
                return client
        self._sources.pop(facility, None)
        return None


_START = bytes([START_BLOCK])
_ODS_FORM = re.compile(r"[A-Z0-9]{3,6}")


def _new_ack_ids() -> tuple[str, Iterator[int]]:
    return os.urandom(4).hex(), itertools.count(int.from_bytes(os.urandom(4)))


# An ACK's MSH-10: 20 hex digits, 8 random for the process (new in a forked
# child) and 12 counting up from a random start, rather than 20 from
# os.urandom each (a system call an ACK). Unique for the process's life
# (2^48 ACKs) and, as before, across processes by chance alone.
_ack_ids = _new_ack_ids()
os.register_at_fork(after_in_child=lambda: globals().__setitem__("_ack_ids", _new_ack_ids()))


def _ack_control_id() -> str:
    prefix, counter = _ack_ids
    return f"{prefix}{next(counter) & 0xFFFFFFFFFFFF:012x}"


_clock: tuple[float, datetime] = (-1.0, datetime.fromtimestamp(0, UTC))  # a second (time.time() // 1), as a datetime


def _this_second() -> datetime:
    """`datetime.now(UTC)` to the second (all MSH-7 shows), made once a
    second: an engine's connections are answered hundreds of times a second,
    and ack.py formats a time once for the same object."""
    global _clock
    second = time.time() // 1
    held, now = _clock
    if second != held:
        now = datetime.fromtimestamp(second, UTC)
        _clock = (second, now)
    return now


def _code_for(reason: str) -> str:
    if reason.startswith("is required"):
        return "101"
    if reason.startswith("is not"):
        return "103"
    return APPLICATION_ERROR
