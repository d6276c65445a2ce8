"""Data key rotation: re-encrypt the store under a new data key (`s117hub rotate-data-key`, hub/rekey_cli.py).

Everything the hub keeps under the data key (hub/crypto.py) is rewritten under the new one, a table at a
time (`PHASES`, in this order) and, in each, a chunk of rows at a time, each chunk one transaction that
also moves the rotation's progress record (`store_key_rotations`, migration 0040) past it:

- the keyed hashes (HMAC of an NHS number under a key derived from the data key) are recomputed from the
  number itself, wherever the store holds it: `persons.nhs_number_index` from the person's own details
  (a merged person's tombstone, `merged:<id>`, is no hash and stays); `person_merges.retained_index` from
  the merge's encrypted retained number, and `superseded_index` from the details of the person the
  superseded number was taken off (`superseded_person_id`), which still hold it;
  `reconciliation_rows.person_key` and `reconciliation_items.person_key` from the number kept encrypted
  beside them (`person_number`, since migration 0041; checked: its hash under the old key must be the hash
  held, else it is not trusted), else through the person (or merge) whose old hash they are, and the
  number sealed again under the new key (written for a row or difference kept before that the person or
  merge resolves). A hash whose number the store does not hold cannot be recomputed: a merge recorded
  before migration 0039 whose superseded number was never on the register (or whose person took the
  retained number), a body's snapshot row or difference kept before migration 0041 for someone not on the
  register. The rotation is refused, with nothing changed, while the store holds any such hash (named,
  with counts; the reconciliation ones with the option that lets it go on). With that option
  (`FORGET_OPTION`, recorded with the progress, so a resumed rotation does the same) each reconciliation
  hash of the kind is replaced by a tombstone (`unkeyed`: `UNKEYED` and an HMAC of it under the new key,
  so a row and its differences stay joined, and which no keyed hash, a hex digest, can equal); the rows
  and differences are kept otherwise, matched by number to no one from then on, and counted in the
  operator action. A tombstone (that, or a merged person's `merged:<id>`) is no hash: it stays.
- the encrypted values are decrypted under the old key (Fernet tokens of earlier versions too) and sealed
  under the new one: persons' details, merges' retained numbers, retractions' reasons, quarantined input
  (emptied by retention: left), subscriptions' signing secrets (webhook and FHIR rest-hook), queued
  messages (`delivery_messages`), council files held while they are processed, reconciliation rows'
  local ids, reconciliation rows' and differences' NHS numbers, transfer and dispute cases' reasons
  (`workflow_cases.data`, text tokens in the JSON);
- the audit chain's daily checkpoints are signed with a key derived from the data key unless
  S117_AUDIT_KEY is set: each checkpoint whose signature holds under the old key is signed again under
  the new one (one that does not is left as it is, and `audit verify` goes on reporting it). The chain's
  entries hash their records' content, and no audit record holds ciphertext or a keyed hash, so they
  are untouched and the chain verifies as before;
- last, in one transaction: the store's key record (`store_keys`) under the new key, an operator action
  (`data-key-rotated`, both keys' fingerprints, the counts, the hashes forgotten) for the audit chain, and
  the progress record deleted.

The progress record is written first (phase `check`): from then on every process that opens the store
is refused (hub/store/key_check.py `RotationInProgress`), so a hub started meanwhile cannot write under
the old key into a store being rewritten. Then, before anything is rewritten, a read-only pass does the
same work without writing (every value decrypted, every hash resolved): a store the rotation could not
finish is refused as it stands, the progress record deleted. Once the tables are being rewritten the
store holds data under two keys, refused by every process until the same command, given the same new key
and the old one still configured, finishes it from the chunk after the last committed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import Date, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.crypto import DataProtector
from hub.ingest.nhs_number import normalise
from hub.store.key_check import CHECK_TEXT, NAME, _opens, check_data_key
from hub.store.merged import TOMBSTONE_PREFIX
from hub.store.schema import (
    audit_checkpoints,
    change_retraction_reversals,
    change_retractions,
    delivery_messages,
    file_receipts,
    person_merge_reversals,
    person_merges,
    persons,
    quarantine,
    reconciliation_items,
    reconciliation_rows,
    store_key_rotations,
    store_keys,
    subscriptions,
    workflow_cases,
)

ACTOR, ACTION = "hub:rekey", "data-key-rotated"  # the rotation's operator action (audited: hub/audit.py)
# The command's option (hub/rekey_cli.py) that lets a rotation replace a reconciliation hash whose number the
# store holds nowhere with a tombstone (`UNKEYED` and a value unique to the hash): named in the refusal.
FORGET_OPTION = "--forget-unmatched-reconciliation"
UNKEYED = "unkeyed:"  # a forgotten reconciliation hash's tombstone: no keyed hash (a hex digest) starts so
CHECK, FINISH = "check", "finish"  # the progress record's phases before and after the tables'
_IN = 500  # values an IN list holds


class RotationRefused(Exception):
    """The rotation cannot go on: the one line printed (exit 2)."""


class SameKey(RotationRefused):
    """The new key is the store's current key (the caller names where it came from)."""

    def __init__(self) -> None:
        super().__init__("is the store's current data key (S117_DATA_KEY / S117_DATA_KEY_FILE): give a new one; "
                         "nothing was changed")


def key_fingerprint(key: bytes) -> str:
    from hub.backup_cli import key_fingerprint as fingerprint  # the one `s117hub backup` prints

    return fingerprint(key)


def same_key(a: bytes, b: bytes) -> bool:
    """Whether two data keys are one key (their bytes, however they are written)."""
    try:
        return base64.urlsafe_b64decode(a.strip()) == base64.urlsafe_b64decode(b.strip())
    except ValueError:
        return a.strip() == b.strip()


@dataclass
class _Ctx:
    old: DataProtector
    new: DataProtector
    audit_old: bytes | None  # the checkpoints' keys, derived from the data keys; None: S117_AUDIT_KEY set
    audit_new: bytes | None
    forget: bool = False  # FORGET_OPTION: a hash whose number is held nowhere becomes a tombstone
    problems: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def problem(self, what: str) -> None:
        self.problems[what] = self.problems.get(what, 0) + 1

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def opened(self, token: bytes, what: str) -> bytes | None:
        """`open`, the token counted a problem under `what` if it opens under neither key."""
        plain = self.open(token)
        if plain is None:
            self.problem(f"{what} {UNDECRYPTABLE}")
        return plain

    def open(self, token: bytes) -> bytes | None:
        """The plain bytes of a token under the old key (or the new: a row a resumed rotation rewrote
        already); None under neither."""
        for key in (self.old, self.new):
            try:
                return key.decrypt(bytes(token))
            except ValueError:
                continue
        return None

    def open_text(self, token: str) -> str | None:
        for key in (self.old, self.new):
            try:
                return key.decrypt_text(token)
            except (ValueError, UnicodeDecodeError):
                continue
        return None

    def rehash(self, number: str, held: str) -> str | None:
        """The new key's hash of `number`, if `held` is its hash under the old key (or the new already)."""
        number = normalise(number)
        if self.old.index(number) == held or self.new.index(number) == held:
            return self.new.index(number)
        return None


def _number(details: bytes | None, ctx: _Ctx) -> str | None:
    """The NHS number a person's encrypted details hold, or None."""
    return _number_in(ctx.open(details) if details is not None else None)


def _number_in(plain: bytes | None) -> str | None:
    """The NHS number of a person's details (decrypted), or None."""
    if plain is None:
        return None
    try:
        number = orjson.loads(plain).get("nhs_number")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return number if isinstance(number, str) else None


async def _details_of(conn: AsyncConnection, person_ids: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    ids = sorted(person_ids)
    for i in range(0, len(ids), _IN):
        for r in (await conn.execute(select(persons.c.person_id, persons.c.details)
                                     .where(persons.c.person_id.in_(ids[i:i + _IN])))).all():
            out[r.person_id] = bytes(r.details)
    return out


async def resolve(conn: AsyncConnection, keys: set[str], ctx: _Ctx) -> dict[str, tuple[str, str]]:
    """Old hash -> (new hash, the NHS number) for each of `keys` (a reconciliation row's or difference's
    `person_key`) whose NHS number the store holds: a person's under that hash, the superseded number of a
    merge (its own copy, else the details of the person it was taken off), a merge's retained number. Keys
    it cannot resolve are left out. Run while persons and merges still hold the old hashes (`PHASES` puts
    them after)."""
    out: dict[str, tuple[str, str]] = {}
    todo = sorted(k for k in keys if not _tombstone(k))
    for i in range(0, len(todo), _IN):
        part = todo[i:i + _IN]
        for r in (await conn.execute(select(persons.c.nhs_number_index, persons.c.details)
                                     .where(persons.c.nhs_number_index.in_(part)))).all():
            number = _number(r.details, ctx)
            new = ctx.rehash(number, r.nhs_number_index) if number else None
            if new is not None and number is not None:
                out[r.nhs_number_index] = (new, normalise(number))
        rest = [k for k in part if k not in out]
        if not rest:
            continue
        merged = (await conn.execute(select(person_merges.c.superseded_index, person_merges.c.superseded_person_id,
                                            person_merges.c.superseded_number)
                                     .where(person_merges.c.superseded_index.in_(rest)))).all()
        held = await _details_of(conn, {r.superseded_person_id for r in merged if r.superseded_person_id})
        for r in merged:
            number = _superseded_number(r, held, ctx)
            new = ctx.rehash(number, r.superseded_index) if number else None
            if new is not None and number is not None:
                out[r.superseded_index] = (new, normalise(number))
        rest = [k for k in rest if k not in out]
        if not rest:
            continue
        for r in (await conn.execute(select(person_merges.c.retained_index, person_merges.c.retained_number)
                                     .where(person_merges.c.retained_index.in_(rest)))).all():
            plain = ctx.open(r.retained_number)
            new = ctx.rehash(plain.decode(), r.retained_index) if plain else None
            if new is not None and plain is not None:
                out[r.retained_index] = (new, normalise(plain.decode()))
    return out


def _tombstone(key: str) -> bool:
    """A reconciliation `person_key` that is no keyed hash (nothing to recompute): a merged person's
    tombstone, or a hash a rotation forgot (`UNKEYED`)."""
    return key.startswith((TOMBSTONE_PREFIX, UNKEYED))


def unkeyed(ctx: _Ctx, old: str) -> str:
    """The tombstone a forgotten hash `old` is replaced by: `UNKEYED` and an HMAC of it under the new key
    (no NHS number's hash under any key: the prefix is not hex; the same for the hash's rows and
    differences, so a snapshot's difference still finds the body's row and its local id, and for a resumed
    rotation; linkable to a number only with both keys)."""
    return UNKEYED + ctx.new.index("s117hub-unkeyed:" + old)[:64 - len(UNKEYED)]


UNDECRYPTABLE = "does not decrypt under the store's data key"
NOT_HELD = ("its NHS number is held nowhere in the store, so its keyed hash cannot be recomputed under a new "
            "key")
UNMATCHED = ("the keyed hash only (kept before migration 0041), its NHS number held nowhere else (someone not on "
             "the register)")

Rewrite = Callable[[AsyncConnection, list[Any], _Ctx], Awaitable[list[dict[str, Any] | None]]]


@dataclass(frozen=True)
class Phase:
    """One table's rewrite: its rows read in `key` order after the cursor (`where`: only rows holding
    something to rewrite), `rewrite` giving each row's new values (`writes`, or None: unchanged), each
    row updated where its `match` columns hold what was read."""
    table: Table
    key: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    rewrite: Rewrite
    chunk: int
    where: Any = None
    match: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(self.table.name)


def _sealed(column: str, what: str) -> Rewrite:
    """A rewrite of one encrypted binary column (None and b"" left as they are)."""

    async def rewrite(_conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for r in rows:
            token = getattr(r, column)
            if not token:
                out.append(None)
                continue
            plain = ctx.opened(token, what)
            if plain is None:
                out.append(None)
                continue
            out.append({column: ctx.new.encrypt(plain)})
            ctx.count(what)
        return out

    return rewrite


def _sealed_columns(table: str, *columns: str) -> Rewrite:
    """A rewrite of several encrypted binary columns of a row (each as `_sealed` rewrites one; one that
    does not open under a key the store knows is left as it is)."""

    async def rewrite(_conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for r in rows:
            new: dict[str, Any] = {}
            for column in columns:
                token = getattr(r, column)
                plain = ctx.opened(token, f"{table}.{column}") if token else None
                new[column] = token if plain is None else ctx.new.encrypt(plain)
                if plain is not None:
                    ctx.count(f"{table}.{column}")
            out.append(new if any(new[c] is not getattr(r, c) for c in columns) else None)
        return out

    return rewrite


async def _reconciliation(conn: AsyncConnection, rows: list[Any], ctx: _Ctx, table: str,
                          local_id: bool) -> list[dict[str, Any] | None]:
    """A body's snapshot rows or differences: each hash recomputed from its own encrypted number (migration
    0041; checked: the number's hash under the old key must be the hash held), else through the person or
    merge whose hash it is (`resolve`), and the number sealed under the new key; a tombstone stays. A hash
    neither gives (kept before 0041 for someone not on the register) is a problem, or, with
    FORGET_OPTION, replaced by its tombstone (`unkeyed`), the row kept otherwise."""
    own: dict[int, tuple[str, bytes]] = {}  # row -> (new hash, its number)
    undecryptable: set[int] = set()
    for n, r in enumerate(rows):
        if not r.person_number or _tombstone(r.person_key):
            continue
        plain = ctx.opened(r.person_number, f"{table}.person_number")
        if plain is None:
            undecryptable.add(n)
            continue
        new = ctx.rehash(plain.decode(), r.person_key)
        if new is None:  # not the number of its hash: not trusted, resolved as a row without one
            ctx.count(f"{table}.person_number_not_its_hash")
            continue
        own[n] = (new, normalise(plain.decode()).encode())
    found = await resolve(conn, {r.person_key for n, r in enumerate(rows) if n not in own}, ctx)
    out: list[dict[str, Any] | None] = []
    for n, r in enumerate(rows):
        if n in undecryptable:
            out.append(None)
            continue
        values: dict[str, Any]
        if _tombstone(r.person_key):
            values = {"person_key": r.person_key, "person_number": r.person_number}
            if r.person_number:
                plain = ctx.opened(r.person_number, f"{table}.person_number")
                if plain is None:
                    out.append(None)
                    continue
                values["person_number"] = ctx.new.encrypt(plain)
        elif n in own or r.person_key in found:
            new, number = own[n] if n in own else (found[r.person_key][0], found[r.person_key][1].encode())
            values = {"person_key": new, "person_number": ctx.new.encrypt(number)}
            ctx.count(f"{table}.person_key")
        elif ctx.forget:
            values = {"person_key": unkeyed(ctx, r.person_key), "person_number": None}
            ctx.count(f"{table}.person_key_forgotten")
        else:
            ctx.problem(f"{table}.person_key: {UNMATCHED}")
            out.append(None)
            continue
        if local_id:
            values["local_id"] = r.local_id
            if r.local_id:
                plain = ctx.opened(r.local_id, f"{table}.local_id")
                if plain is not None:
                    values["local_id"] = ctx.new.encrypt(plain)
                    ctx.count(f"{table}.local_id")
        out.append(values)
    return out


async def _rows(conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    return await _reconciliation(conn, rows, ctx, "reconciliation_rows", True)


async def _items(conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    return await _reconciliation(conn, rows, ctx, "reconciliation_items", False)


def _superseded_number(row: Any, held: dict[str, bytes], ctx: _Ctx) -> str | None:
    """A merge's superseded NHS number: its own encrypted copy (merges since migration 0039), else the
    details of the person it was taken off, which still hold it."""
    if row.superseded_number:
        plain = ctx.open(row.superseded_number)
        if plain is not None:
            return plain.decode()
    return _number(held.get(row.superseded_person_id), ctx) if row.superseded_person_id else None


async def _merges(conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    held = await _details_of(conn, {r.superseded_person_id for r in rows if r.superseded_person_id})
    out: list[dict[str, Any] | None] = []
    for r in rows:
        plain = ctx.opened(r.retained_number, "person_merges.retained_number")
        if plain is None:
            out.append(None)
            continue
        retained = ctx.rehash(plain.decode(), r.retained_index)
        if retained is None:
            ctx.problem("person_merges.retained_index: not the keyed hash of the merge's retained number")
        number = _superseded_number(r, held, ctx)
        superseded = ctx.rehash(number, r.superseded_index) if number else None
        if superseded is None:
            ctx.problem(f"person_merges.superseded_index: {NOT_HELD} (a merge recorded before migration 0039 "
                        "whose superseded number was never on the register, or whose person took the retained "
                        "number)")
        if retained is None or superseded is None:
            out.append(None)
            continue
        out.append({"superseded_index": superseded, "retained_index": retained,
                    "retained_number": ctx.new.encrypt(plain),
                    "superseded_number": ctx.new.encrypt(number.encode()) if r.superseded_number else None})
        ctx.count("person_merges")
    return out


def _unlinked(merge_id: str, which: str) -> str:
    """What stands in a reversed merge's hash whose number the store no longer holds: no hash (it links
    to no NHS number under any key), unique to the row."""
    return f"{TOMBSTONE_PREFIX}reversal:{merge_id}:{which}"[:64]


async def _reversals(conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    """A reversed merge (hub/unmerges.py): its reason sealed again, and its two hashes, which nothing reads
    (the row is found by its merge id), recomputed from the two persons' details where they hold the
    numbers; where they do not (the merge only linked two numbers neither of which was on the register),
    replaced by a value that is no hash, so that no NHS number stays linkable under the old key."""
    held = await _details_of(conn, {p for r in rows for p in (r.superseded_person_id, r.retained_person_id) if p})
    out: list[dict[str, Any] | None] = []
    for r in rows:
        plain = ctx.opened(r.reason, "person_merge_reversals.reason")
        if plain is None:
            out.append(None)
            continue
        values: dict[str, Any] = {"reason": ctx.new.encrypt(plain)}
        for column, person, which in (("superseded_index", r.superseded_person_id, "s"),
                                      ("retained_index", r.retained_person_id, "r")):
            old = getattr(r, column)
            if old.startswith(TOMBSTONE_PREFIX):
                values[column] = old
                continue
            number = _number(held.get(person), ctx) if person else None
            values[column] = (ctx.rehash(number, old) if number else None) or _unlinked(r.merge_id, which)
        out.append(values)
        ctx.count("person_merge_reversals")
    return out


async def _persons(_conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for r in rows:
        plain = ctx.opened(r.details, "persons.details")
        if plain is None:
            out.append(None)
            continue
        index = r.nhs_number_index
        if not index.startswith(TOMBSTONE_PREFIX):  # a merged person's tombstone is no hash: kept
            number = _number_in(plain)
            index = ctx.rehash(number, r.nhs_number_index) if number else None
            if index is None:
                ctx.problem("persons.nhs_number_index: not the keyed hash of the NHS number the person's "
                            "details hold")
                out.append(None)
                continue
            ctx.count("persons.nhs_number_index")
        out.append({"nhs_number_index": index, "details": ctx.new.encrypt(plain)})
        ctx.count("persons.details")
    return out


async def _cases(_conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for r in rows:
        data = r.data
        token = data.get("reason") if isinstance(data, dict) else None
        if not token:
            out.append(None)
            continue
        plain = ctx.open_text(token)
        if plain is None:
            ctx.problem(f"workflow_cases.data reason {UNDECRYPTABLE}")
            out.append(None)
            continue
        out.append({"data": {**data, "reason": ctx.new.encrypt_text(plain)}})
        ctx.count("workflow_cases.reason")
    return out


def _signature(key: bytes, day: date, seq: int, last_hash: str) -> str:
    from hub.audit import AuditChain

    return AuditChain(None, key)._sign(day, seq, last_hash)  # type: ignore[arg-type]  # the chain's own


async def _checkpoints(_conn: AsyncConnection, rows: list[Any], ctx: _Ctx) -> list[dict[str, Any] | None]:
    import hmac

    assert ctx.audit_old is not None and ctx.audit_new is not None
    out: list[dict[str, Any] | None] = []
    for r in rows:
        day = r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day))
        signed = str(r.signature).encode()
        if hmac.compare_digest(signed, _signature(ctx.audit_old, day, r.last_seq, r.last_hash).encode()):
            out.append({"signature": _signature(ctx.audit_new, day, r.last_seq, r.last_hash)})
            ctx.count("audit_checkpoints")
        else:  # not signed under the old key (edited?): left as it is; `audit verify` goes on saying so
            out.append(None)
            if not hmac.compare_digest(signed, _signature(ctx.audit_new, day, r.last_seq, r.last_hash).encode()):
                ctx.count("audit_checkpoints_not_verifying")
    return out


PHASES: tuple[Phase, ...] = (
    # The hashes resolved through persons and merges first, while those still hold the old hashes.
    Phase(reconciliation_rows, ("snapshot_id", "row_no"), ("person_key", "person_number", "local_id"),
          ("person_key", "person_number", "local_id"), _rows, 1000),
    Phase(reconciliation_items, ("item_id",), ("person_key", "person_number"), ("person_key", "person_number"),
          _items, 1000),
    Phase(person_merges, ("merge_id",), ("superseded_index", "retained_index", "retained_number",
                                         "superseded_person_id", "superseded_number"),
          ("superseded_index", "retained_index", "retained_number", "superseded_number"), _merges, 200,
          match=("superseded_index",)),
    Phase(person_merge_reversals, ("merge_id",), ("superseded_index", "retained_index", "superseded_person_id",
                                                  "retained_person_id", "reason"),
          ("superseded_index", "retained_index", "reason"), _reversals, 200),
    Phase(persons, ("person_id",), ("nhs_number_index", "details"), ("nhs_number_index", "details"), _persons, 500),
    Phase(change_retractions, ("change_id",), ("reason",), ("reason",),
          _sealed("reason", "change_retractions.reason"), 500),
    Phase(change_retraction_reversals, ("retraction_event_id",), ("reason", "retraction_reason"),
          ("reason", "retraction_reason"), _sealed_columns("change_retraction_reversals", "reason",
                                                           "retraction_reason"), 500),
    Phase(quarantine, ("quarantine_id",), ("raw",), ("raw",), _sealed("raw", "quarantine.raw"), 100,
          where=func.length(quarantine.c.raw) > 0),
    Phase(subscriptions, ("subscription_id",), ("secret",), ("secret",), _sealed("secret", "subscriptions.secret"),
          200, where=subscriptions.c.secret.is_not(None)),
    Phase(delivery_messages, ("delivery_seq",), ("payload",), ("payload",),
          _sealed("payload", "delivery_messages.payload"), 500, where=func.length(delivery_messages.c.payload) > 0),
    # A council file is held (up to 20 MB) only while it is processed: one a transaction.
    Phase(file_receipts, ("file_id",), ("content",), ("content",), _sealed("content", "file_receipts.content"), 1,
          where=file_receipts.c.content.is_not(None)),
    Phase(workflow_cases, ("case_id",), ("data",), ("data",), _cases, 500),
    Phase(audit_checkpoints, ("day",), ("signature", "last_seq", "last_hash"), ("signature",), _checkpoints, 1000),
)
ORDER = [CHECK] + [p.name for p in PHASES] + [FINISH]


def _after(phase: Phase, cursor: list[Any] | None) -> Any:
    """Rows after `cursor` (the last row's key values) in the phase's key order."""
    if not cursor:
        return None
    cols = [phase.table.c[k] for k in phase.key]
    values = [date.fromisoformat(v) if isinstance(c.type, Date) else v for c, v in zip(cols, cursor)]
    if len(cols) == 1:
        return cols[0] > values[0]
    return or_(cols[0] > values[0], and_(cols[0] == values[0], cols[1] > values[1]))


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


async def _chunk(conn: AsyncConnection, phase: Phase, cursor: list[Any] | None, ctx: _Ctx, size: int,
                 write: bool) -> tuple[int, list[Any] | None]:
    """Read the phase's next chunk after `cursor` and rewrite it (`write`) or only work it out: how many
    rows were read, and the cursor after them."""
    names = list(dict.fromkeys((*phase.key, *phase.match, *phase.reads)))  # each once, in order
    query = select(*[phase.table.c[k] for k in names])
    conditions = [c for c in (phase.where, _after(phase, cursor)) if c is not None]
    if conditions:
        query = query.where(and_(*conditions))
    rows = (await conn.execute(query.order_by(*[phase.table.c[k] for k in phase.key]).limit(size))).all()
    if not rows:
        return 0, cursor
    values = await phase.rewrite(conn, rows, ctx)
    if write:
        match = phase.match or phase.key
        params = [{**{f"m_{k}": getattr(r, k) for k in match}, **{f"v_{k}": v[k] for k in phase.writes}}
                  for r, v in zip(rows, values) if v is not None]
        if params:
            await conn.execute(update(phase.table)
                               .where(and_(*[phase.table.c[k] == bindparam(f"m_{k}") for k in match]))
                               .values({k: bindparam(f"v_{k}") for k in phase.writes}), params)
    return len(rows), [_jsonable(getattr(rows[-1], k)) for k in phase.key]


def _phases(ctx: _Ctx) -> list[Phase]:
    return [p for p in PHASES if p.table is not audit_checkpoints or ctx.audit_old is not None]


async def check(engine: AsyncEngine, ctx: _Ctx, chunk: int | None = None) -> dict[str, int]:
    """The rotation worked out without writing anything: what it could not do (problem -> rows)."""
    for phase in _phases(ctx):
        cursor = None
        while True:
            async with engine.connect() as conn:
                n, cursor = await _chunk(conn, phase, cursor, ctx, chunk or phase.chunk, write=False)
                await conn.rollback()
            if n < (chunk or phase.chunk):
                break
    ctx.counts.clear()
    return dict(ctx.problems)


@dataclass
class Result:
    old_fingerprint: str
    new_fingerprint: str
    resumed: bool
    already: bool = False  # the store was under the new key already: nothing done
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    forgotten: dict[str, Any] | None = None  # FORGET_OPTION given: the hashes replaced by tombstones


def refusal(problems: dict[str, int]) -> str:
    """The one line refusing a rotation the check found it could not finish: each problem and its rows;
    where only the operator's FORGET_OPTION would let it go on, the option and how many hashes it forgets."""
    def rows(n: int) -> str:
        return f"{n} row{'s' if n != 1 else ''}"

    why = "not rotated, nothing was changed: " + "; ".join(
        f"{what}: {rows(n)}" for what, n in sorted(problems.items()))
    unmatched = sum(n for what, n in problems.items() if what.endswith(f".person_key: {UNMATCHED}"))
    if unmatched:
        why += (f"; give {FORGET_OPTION} to rotate all the same, the {unmatched} reconciliation "
                f"{'hashes' if unmatched != 1 else 'hash'} replaced by values that match no one (the rows and "
                "differences kept, their counts and states; audited)")
    return why


def _forgotten(ctx: _Ctx) -> dict[str, Any]:
    """What FORGET_OPTION did, for the operator action and the command's report."""
    return {"reconciliation_rows": ctx.counts.get("reconciliation_rows.person_key_forgotten", 0),
            "reconciliation_items": ctx.counts.get("reconciliation_items.person_key_forgotten", 0),
            "meaning": ("reconciliation rows and differences kept before migration 0041 for someone not on the "
                        "register: their keyed hash (its NHS number held nowhere) replaced by a value that "
                        "matches no one; the rows and differences kept, no longer matched to a person by number")}


async def rotate(engine: AsyncEngine, old_key: bytes, new_key: bytes, *, audit_key_set: bool,
                 chunk: int | None = None,
                 after_chunk: Callable[[str], Awaitable[None] | None] | None = None,
                 begun: Callable[[], None] | None = None,
                 busy: Callable[[], Awaitable[str | None]] | None = None,
                 forget_unmatched: bool = False) -> Result:
    """Rotate the store (migrated) from `old_key` (the configured key: the store's) to `new_key` (see the
    module), or finish a rotation to `new_key` begun before. `audit_key_set`: S117_AUDIT_KEY is set (the
    checkpoints are not signed under a key derived from the data key). `chunk`: rows a transaction in every
    table (default: each table's own). `after_chunk`: called with the phase's name after each committed
    chunk (tests); `begun`, once every other process is refused the store (the progress record written);
    `busy`, then, before anything is rewritten: why another process has the store open, or None (one
    started between the caller's own look and the progress record). `forget_unmatched` (FORGET_OPTION):
    a reconciliation hash whose NHS number the store holds nowhere is replaced by a tombstone instead of
    refusing the rotation (recorded with its progress: a resumed rotation does the same). `RotationRefused`
    (one line, naming why) where it cannot."""
    from hub.audit import audit_key, record_operator_action

    started = time.monotonic()
    old, new = DataProtector(old_key), DataProtector(new_key)
    ctx = _Ctx(old, new, None if audit_key_set else audit_key(None, old.index),
               None if audit_key_set else audit_key(None, new.index), forget=forget_unmatched)
    result = Result(key_fingerprint(old_key), key_fingerprint(new_key), resumed=False)
    token_q = select(store_keys.c.check_token).where(store_keys.c.name == NAME)
    async with engine.connect() as conn:
        progress = (await conn.execute(select(store_key_rotations)
                                       .where(store_key_rotations.c.name == NAME))).first()
        token = (await conn.execute(token_q)).scalar_one_or_none()
        await conn.rollback()
    if progress is None and same_key(old_key, new_key):
        raise SameKey()
    if progress is not None:
        if not _opens(new, progress.new_check_token) or same_key(old_key, new_key):
            if _opens(old, progress.new_check_token):
                raise RotationRefused(
                    "S117_DATA_KEY / S117_DATA_KEY_FILE is already the new key of the rotation in progress "
                    f"(fingerprint {progress.new_fingerprint}): set it back to the old key (fingerprint "
                    f"{progress.old_fingerprint}) until the rotation finishes, and give the new key again")
            raise RotationRefused(
                "a rotation to another new key is in progress (fingerprint "
                f"{progress.new_fingerprint}): give that key to finish it; nothing was changed")
        if token is None or not _opens(old, bytes(token)):
            raise RotationRefused(
                "the data key (S117_DATA_KEY, else the file S117_DATA_KEY_FILE) is not the key the rotation in "
                f"progress started from (fingerprint {progress.old_fingerprint}): configure that key and run "
                "again; nothing was changed")
        result.resumed = True
        ctx.forget = forget_unmatched or bool(progress.forget_unmatched)  # as the rotation begun chose
        if begun is not None:
            begun()
        phase_name, cursor, counts = progress.phase, progress.cursor, dict(progress.counts or {})
        ctx.counts.update(counts)
    else:
        if token is not None and _opens(new, bytes(token)):
            result.already = True
            return result
        await check_data_key(engine, old)  # the configured key must be the store's (recorded if not yet)
        now = datetime.now(UTC)
        try:  # first: a hub started from now on is refused (RotationInProgress), the check pass included
            async with engine.begin() as conn:
                await conn.execute(store_key_rotations.insert().values(
                    name=NAME, new_check_token=new.encrypt(CHECK_TEXT), old_fingerprint=result.old_fingerprint,
                    new_fingerprint=result.new_fingerprint, phase=CHECK, cursor=None, counts={},
                    started_at=now, updated_at=now, forget_unmatched=forget_unmatched))
        except IntegrityError:
            raise RotationRefused("another rotation began meanwhile: run the command again") from None
        if begun is not None:
            begun()
        phase_name, cursor = CHECK, None
    if phase_name == CHECK:  # nothing rewritten yet: a store it could not finish is refused as it stands
        why = await busy() if busy is not None else None
        if why is None:
            problems = await check(engine, ctx, chunk)
            if problems:
                why = refusal(problems)
        async with engine.begin() as conn:
            if why is not None:  # the progress record only: the store as it was
                await conn.execute(delete(store_key_rotations).where(store_key_rotations.c.name == NAME))
            else:
                phase_name = ORDER[1]
                await conn.execute(update(store_key_rotations).where(store_key_rotations.c.name == NAME)
                                   .values(phase=phase_name, updated_at=datetime.now(UTC)))
        if why is not None:
            raise RotationRefused(why)
    phases = _phases(ctx)
    names = [p.name for p in phases]
    for phase in phases:  # from the one in progress (`cursor`: the last row it rewrote), each from its start
        if ORDER.index(phase.name) < ORDER.index(phase_name):
            continue  # rewritten before (FINISH: all of them)
        size = chunk or phase.chunk
        while True:
            async with engine.begin() as conn:
                n, cursor = await _chunk(conn, phase, cursor, ctx, size, write=True)
                if ctx.problems:  # found by the check before anything was written: the store changed since
                    raise RotationRefused("the store changed while it was being rotated ("
                                          + "; ".join(sorted(ctx.problems)) + "): stop every other process "
                                          "and run the command again to finish")
                done = n < size
                following = names[names.index(phase.name) + 1] if phase.name != names[-1] else FINISH
                phase_name = following if done else phase.name
                await conn.execute(update(store_key_rotations).where(store_key_rotations.c.name == NAME).values(
                    phase=phase_name, cursor=None if done else cursor, counts=dict(ctx.counts),
                    updated_at=datetime.now(UTC)))
            if n and after_chunk is not None:
                got = after_chunk(phase.name)
                if got is not None:
                    await got
            if done:
                cursor = None
                break
    async with engine.begin() as conn:
        await conn.execute(update(store_keys).where(store_keys.c.name == NAME)
                           .values(check_token=new.encrypt(CHECK_TEXT), created_at=datetime.now(UTC)))
        await record_operator_action(conn, ACTOR, ACTION, NAME, {
            "old_key_fingerprint": result.old_fingerprint, "new_key_fingerprint": result.new_fingerprint,
            "resumed": result.resumed, "rewritten": dict(sorted(ctx.counts.items())),
            **({"forgotten_unmatched_reconciliation": _forgotten(ctx)} if ctx.forget else {}),
            "audit_checkpoints": "S117_AUDIT_KEY: unchanged" if audit_key_set else "signed again under the new key",
            "meaning": "the store was re-encrypted under a new data key: backups taken before need the old key"})
        await conn.execute(delete(store_key_rotations).where(store_key_rotations.c.name == NAME))
    result.counts = dict(sorted(ctx.counts.items()))
    result.forgotten = _forgotten(ctx) if ctx.forget else None
    result.seconds = round(time.monotonic() - started, 2)
    return result
