"""What a shadow holds in memory, one record per element: the value read from the file (ᐁ), the dask
graph built over it, and the value assigned in memory (▲) or its deletion.

Elements are named by their path relative to the AnnData/MuData group: ``"X"``, ``"obsm/X_pca"``,
``"uns/params/k"``, an obs column ``"obs/leiden"``, the obs names ``"obs/<index key>"``. Every reader and
writer of a shadow's memory goes through here (DESIGN.md section 2: ``core/state.py``), so what
``clear_cache()`` may drop, what ``write()`` must commit and what the repr marks all come from one place.

Held values and graphs carry the layout generation they were read under: after the file changed under
another shadow of the same connection, they are dropped and read again, never served stale. Changes
carry no generation: they are the user's, and stay until written or dropped by the user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shadows.cache import fingerprint

#: "no value": a record field that is empty (distinct from ``None``, a value like any other).
NOTHING: Any = object()


@dataclass
class Record:
    """One element's state in a shadow's memory."""

    held: Any = NOTHING  # the value read from the file (ᐁ), or a persisted graph
    checksum: int | None = None  # of ``held`` when read: tells whether it was changed in place since
    graph: Any = NOTHING  # the element's dask graph (built from metadata: nothing read)
    change: Any = NOTHING  # the value assigned in memory (▲), or a deletion
    generation: int = -1  # the layout generation ``held`` and ``graph`` come from

    def empty(self) -> bool:
        return self.held is NOTHING and self.graph is NOTHING and self.change is NOTHING


class ElementState:
    """The records of one shadow (a view has its own)."""

    def __init__(self, generation: Callable[[], int], deleted: Any) -> None:
        self._records: dict[str, Record] = {}
        self._generation = generation  # the file's layout generation now
        self.deleted = deleted  # the deletion marker writes understand
        self._stale: set[str] = set()  # elements still shown as they were before a private axis change

    def _record(self, rel: str) -> Record:
        record = self._records.get(rel)
        if record is None:
            record = self._records[rel] = Record(generation=self._generation())
        return record

    def _current(self, rel: str) -> Record | None:
        """The record of ``rel``, with what was read under an older layout generation dropped."""
        record = self._records.get(rel)
        if record is not None and record.generation != (now := self._generation()):
            record.held, record.checksum, record.graph, record.generation = NOTHING, None, NOTHING, now
        return record

    def carry_over(self, before: int) -> None:
        """The shadow's own write moved the file from generation ``before`` to the current one; what the
        write did not touch (everything still recorded) stays current.
        """
        now = self._generation()
        for record in self._records.values():
            if record.generation == before:
                record.generation = now

    # -- read from the file (ᐁ) ------------------------------------------------------------------

    def held(self, rel: str) -> Any:
        """The value read for ``rel`` (or persisted), or NOTHING."""
        record = self._current(rel)
        return NOTHING if record is None else record.held

    def hold(self, rel: str, value: Any, *, check: bool = True) -> Any:
        """Keep ``value`` as read for ``rel`` (``check``: with a checksum, to tell in-place changes)."""
        record = self._record(rel)
        record.held, record.checksum = value, fingerprint(value) if check else None
        return value

    def held_or_read(self, rel: str, read: Callable[[], Any]) -> Any:
        """The value held for ``rel``, reading (and keeping) it first if there is none."""
        value = self.held(rel)
        return self.hold(rel, read()) if value is NOTHING else value

    def graph(self, rel: str, build: Callable[[], Any]) -> Any:
        """The dask graph of ``rel``, built (from metadata) on first use."""
        record = self._current(rel) or self._record(rel)
        if record.graph is NOTHING:
            record.graph = build()
        return record.graph

    def is_held(self, rel: str) -> bool:
        return self.held(rel) is not NOTHING

    def forget(self, rel: str) -> None:
        """Drop what was read for ``rel`` and its graph (not its change)."""
        record = self._records.get(rel)
        if record is not None:
            record.held, record.checksum, record.graph = NOTHING, None, NOTHING

    def held_items(self) -> Iterator[tuple[str, Any]]:
        for rel in list(self._records):
            value = self.held(rel)
            if value is not NOTHING:
                yield rel, value

    # -- changed in memory (▲) -----------------------------------------------------------------------

    def change(self, rel: str, value: Any) -> None:
        """``rel`` takes ``value`` in memory (▲); what was read for it is dropped."""
        self._stale.discard(rel)
        record = self._record(rel)
        record.change, record.held, record.checksum, record.graph = value, NOTHING, None, NOTHING

    def delete(self, rel: str) -> None:
        """``rel`` is deleted in memory (▲; a stored element is removed from the file by ``write``)."""
        self.change(rel, self.deleted)

    def remove(self, rel: str, *, stored: bool) -> None:
        """``rel`` is gone from the shadow: deleted (▲) when the file stores it (``write(overwrite=True)``
        removes it there), forgotten when it only ever was a change in memory.
        """
        if stored:
            self.delete(rel)
        else:
            self.revert(rel)

    def revert(self, rel: str) -> None:
        """Forget the change of ``rel`` (it is the file's again)."""
        self._stale.discard(rel)
        record = self._records.get(rel)
        if record is not None:
            record.change = NOTHING

    def changed(self, rel: str) -> Any:
        """The change of ``rel`` (a value, or the deletion marker), or NOTHING."""
        record = self._records.get(rel)
        return NOTHING if record is None else record.change

    def changes(self) -> dict[str, Any]:
        """Every change, by element path, in the order they were first made."""
        return {rel: r.change for rel, r in self._records.items() if r.change is not NOTHING}

    def children(self, parent: str) -> dict[str, Any]:
        """The changes of ``parent``'s direct children, by key."""
        prefix = f"{parent}/"
        return {rel[len(prefix):]: change for rel, change in self.changes().items()
                if rel.startswith(prefix) and "/" not in rel[len(prefix):]}

    def written(self, rel: str) -> None:
        """The change of ``rel`` is in the file now: nothing of it is held any more."""
        self._records.pop(rel, None)

    def map_changes(self, transform: Callable[[str, Any], Any]) -> None:
        """Replace every changed value by ``transform(rel, value)`` (deletions are kept as they are)."""
        for rel, record in self._records.items():
            if record.change is not NOTHING and record.change is not self.deleted:
                record.change = transform(rel, record.change)

    # -- stale: shown as before an axis changed, until assigned ------------------------------------

    def mark_stale(self, rels: list[str]) -> None:
        """``rels`` keep showing their values from before the axis they are aligned with changed (see
        ``ElementChanges._set_private_frame``) until each is assigned or deleted.
        """
        self._stale = set(rels)

    def is_stale(self, rel: str) -> bool:
        return rel in self._stale

    # -- memory --------------------------------------------------------------------------------------

    def changed_in_place(self) -> list[str]:
        """Elements whose held value differs from what was read (changed in place since)."""
        return [rel for rel, _ in self.held_items() if self.is_changed_in_place(rel)]

    def is_changed_in_place(self, rel: str) -> bool:
        """Whether the value held for ``rel`` differs from what was read (changed in place since)."""
        value = self.held(rel)
        if value is NOTHING:
            return False
        checksum = self._records[rel].checksum
        return checksum is not None and fingerprint(value) != checksum

    def keep_changed_in_place(self) -> None:
        """Make every held value changed in place since it was read a change (▲)."""
        for rel in self.changed_in_place():
            self.change(rel, self._records[rel].held)

    def release(self) -> None:
        """Drop what was read and every graph; a held value changed in place becomes a change (▲).

        What ``clear_cache()`` does: a change is never dropped, nor an array changed in place since it
        was read reverted to the file's values.
        """
        self.keep_changed_in_place()
        for rel in list(self._records):
            self.forget(rel)
            if self._records[rel].empty():
                del self._records[rel]
