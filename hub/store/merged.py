"""NHS numbers merged by PDS: a superseded number resolves to the retained one.

A merge (hub/merges.py) writes a `person_merges` row from the superseded
number's keyed hash to the retained number's, and takes the superseded
number's hash off its hub person (`persons.nhs_number_index` becomes
`merged:<person id>`, which no keyed hash is). So a look-up by a number
finds its person as before, and only a look-up that finds no one asks here:
the hot path of a number in use pays nothing, and a number first seen pays one
indexed read. Chains (A merged into B, later B into C) are followed; a merge
never retains a number already superseded, so there is no cycle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from hub.store.db import Prepared, execute_prepared
from hub.store.schema import person_merges, persons

TOMBSTONE_PREFIX = "merged:"  # `persons.nhs_number_index` of a person whose number was superseded
_MAX_CHAIN = 32  # merges of merges followed, at most (a chain is a handful at most)

_RETAINED = Prepared(select(person_merges.c.retained_index, person_merges.c.retained_number)
                     .where(person_merges.c.superseded_index == bindparam("index")))
_PERSON_BY_INDEX = Prepared(select(persons.c.person_id).where(persons.c.nhs_number_index == bindparam("index")))


def tombstone(person_id: str) -> str:
    """The `nhs_number_index` a superseded person is left with: no keyed hash matches it."""
    return TOMBSTONE_PREFIX + person_id


async def retained(conn: Any, index: str) -> tuple[str, bytes] | None:
    """The retained number's index and its encrypted number, for a superseded number's `index` (the end of
    a chain of merges); None if `index` was never superseded."""
    found: tuple[str, bytes] | None = None
    for _ in range(_MAX_CHAIN):
        row = (await execute_prepared(conn, _RETAINED, {"index": index})).first()
        if row is None:
            return found
        found = (row.retained_index, row.retained_number)
        index = row.retained_index
    return found


async def person_id_by_index(conn: Any, index: str) -> str | None:
    """The hub person id a number's index resolves to: its own person, else the retained number's when it
    was superseded by a merge; None if neither is on the register."""
    row = (await execute_prepared(conn, _PERSON_BY_INDEX, {"index": index})).first()
    if row is not None:
        return str(row.person_id)
    alias = await retained(conn, index)
    if alias is None:
        return None
    row = (await execute_prepared(conn, _PERSON_BY_INDEX, {"index": alias[0]})).first()
    return str(row.person_id) if row is not None else None


async def successor(conn: Any, person_id: str) -> str | None:
    """The hub person a superseded person's id now stands for: for a person whose number a merge superseded
    (its `nhs_number_index` a tombstone), the retained person's id (chains followed); None for any other id.
    One read by primary key for an id that is not a superseded person's."""
    found: str | None = None
    for _ in range(_MAX_CHAIN):
        index = (await conn.execute(select(persons.c.nhs_number_index)
                                    .where(persons.c.person_id == person_id))).scalar_one_or_none()
        if index is None or not index.startswith(TOMBSTONE_PREFIX):
            return found
        row = (await conn.execute(select(person_merges.c.retained_person_id).where(
            person_merges.c.superseded_person_id == person_id,
            person_merges.c.retained_person_id.is_not(None),
            person_merges.c.retained_person_id != person_id))).first()
        if row is None:
            return found
        found = person_id = str(row.retained_person_id)
    return found


async def aliases(conn: Any) -> dict[str, str]:
    """Every superseded number's index -> the index it resolves to (chains followed): for a
    reconciliation snapshot's rows, keyed as the hub's people are."""
    direct = {r.superseded_index: r.retained_index
              for r in (await conn.execute(select(person_merges.c.superseded_index,
                                                  person_merges.c.retained_index))).all()}
    out: dict[str, str] = {}
    for start, target in direct.items():
        for _ in range(_MAX_CHAIN):
            if target not in direct:
                break
            target = direct[target]
        out[start] = target
    return out


async def persons_of_superseded(conn: Any, indexes: list[str]) -> list[tuple[str, str, bytes]]:
    """For those of `indexes` (numbers no person is kept under) superseded by a merge: (the index, the
    retained number's person id, their stored details), their rows locked; a number whose retained number
    has no person yet is left out (made under the retained number by the per-change path). One read of
    the merges when none of them was superseded (a council file's chunk of people new to the register)."""
    if not indexes:
        return []
    superseded = set((await conn.execute(select(person_merges.c.superseded_index)
                                         .where(person_merges.c.superseded_index.in_(indexes)))).scalars())
    out = []
    for index in sorted(superseded):
        alias = await retained(conn, index)
        if alias is None:
            continue
        row = (await conn.execute(select(persons.c.person_id, persons.c.details)
                                  .where(persons.c.nhs_number_index == alias[0]).with_for_update())).first()
        if row is not None:
            out.append((index, row.person_id, row.details))
    return out
