"""The status this process last evaluated for a person, and what from.

A register change is evaluated against the person's history three times on
its way in: the access pre-check (before the request waits for a batch),
`before` and `after` inside its unit of work. The next change for the same
person would evaluate that same history again. `StatusCache` holds, per
person, the status evaluated from a history (the set of its change ids), the
day it was evaluated for and the reference data and agreements it used; a
look-up is a hit only if all of these are the same objects and values now,
so a hit is exactly what `evaluate` would return. Entries are put only once
the change they follow is committed (`after_commit`), so a rolled-back
batch leaves nothing behind. Bounded: oldest out first (an OrderedDict: a
plain dict's first item, once many have been taken from its front, is found
by walking past their empty slots, about 1 us a put when full).

With `histories`, it also gives back the history itself (`history`), for a change sent alone:
register changes are only ever inserted, never updated or deleted, so a
person with as many changes in the store as the history held has exactly
that history, and a count of them on the person's index
(`ix_changes_person`) stands for reading and decoding every one
(hub/ingest/service.py `_history`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import date
from operator import attrgetter
from typing import Any

from hub.domain.model import RegisterChange, S117Status


class StatusCache:
    def __init__(self, max_people: int = 2_048, histories: bool = False) -> None:
        self._max = max_people
        self._keep_histories = histories  # ingest's (`history`); the dispatcher's holds statuses only
        # person -> (day, change ids, status, reference data, agreements, the agreements' generation)
        self._held: OrderedDict[str, tuple[date, frozenset[str], S117Status, Any, Any, int]] = OrderedDict()
        # person -> their history as committed, in the order the store gives it (see `put`)
        self._histories: dict[str, tuple[RegisterChange, ...]] = {}
        self.hits = 0
        self.misses = 0
        self.history_hits = 0

    def get(self, person_id: str, history: Sequence[RegisterChange], today: date, ref: Any,
            agreements: Any) -> S117Status | None:
        held = self._held.get(person_id)
        if held is not None:
            on, ids, status, held_ref, held_agreements, generation = held
            if on == today and held_ref is ref and held_agreements is agreements and len(ids) == len(history) \
                    and generation == (agreements.generation if agreements is not None else 0) \
                    and ids == frozenset(map(_CHANGE_ID, history)):
                self.hits += 1
                return status
        self.misses += 1
        return None

    def put(self, person_id: str, history: Sequence[RegisterChange], today: date, ref: Any, agreements: Any,
            status: S117Status, generation: int | None = None) -> None:
        """`generation`: the agreements' (`AgreementBook.generation`) when `status` was evaluated, if
        they may have been reloaded since (a put after a commit); else theirs now."""
        held = self._held
        held.pop(person_id, None)  # re-inserted last: the oldest is first out
        if generation is None:
            generation = agreements.generation if agreements is not None else 0
        held[person_id] = (today, frozenset(map(_CHANGE_ID, history)), status, ref, agreements, generation)
        # In the order SQLite reads them by `ix_changes_person`: by effective date, then as inserted
        # (a stable sort of the history as read, the new change last). Nothing depends on the order
        # (the fold sorts by `change_order`, a total order), but the same order keeps every step the same.
        if self._keep_histories:
            self._histories[person_id] = tuple(sorted(history, key=_EFFECTIVE))
        while len(held) > self._max:
            gone, _ = held.popitem(last=False)
            self._histories.pop(gone, None)

    def history(self, person_id: str) -> tuple[RegisterChange, ...] | None:
        """The person's history as last committed by this process, if held:
        theirs now only if the store holds as many changes for them."""
        return self._histories.get(person_id)


# A change's id and its effective date, taken in C (a generator or a key function is a Python call an item).
_CHANGE_ID = attrgetter("change_id")
_EFFECTIVE = attrgetter("effective_date")
