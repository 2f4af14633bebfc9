"""Mapping slots of a shadow: layers, obsm, varm, obsp, varp, obsmap, varmap (aligned to axes) and uns
(nested).

Stored keys come from metadata; values are read on access through the shadow's elements
(:mod:`shadows.core.elements`; kept per its backend). Assigning a key keeps the value in memory,
staged (▲) until ``write()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from shadows.cache import marker
from shadows.errors import MissingElementError, ShapeError, element_message
from shadows.names import check_key, check_nested_keys
from shadows.schema import ALIGNED_SLOT_AXES


def as_slot_value(rel: str, value: Any) -> Any:
    """``value`` as anndata keeps it at ``rel``: a one-dimensional numpy array in obsm or varm becomes a
    column (anndata reshapes it on assignment and on reading); everything else as it is (dask arrays stay
    one-dimensional, as anndata keeps them; ``shadows info`` shows the stored shape).
    """
    if rel.split("/", 1)[0] in ("obsm", "varm") and isinstance(value, np.ndarray) and value.ndim == 1:
        return value.reshape(-1, 1)
    return value


def _x_is_a_layer() -> bool:
    import anndata

    return None in anndata.AnnData(X=np.zeros((1, 1), dtype=np.float32)).layers


#: anndata >= 0.13 lists X in layers, as ``layers[None]``; shadows follow the installed anndata.
X_IS_A_LAYER = _x_is_a_layer()


class ElementMapping(MutableMapping):
    """Stored and staged elements of one slot, read lazily through the shadow's elements.

    The mapping holds no state of its own: stored keys come from the file's layout (``stored_keys``),
    changes (▲) and deletions from the element records, merged for a view with its root's by
    :meth:`~shadows.core.elements.ShadowElements.mapping_changes`.

    Parameters
    ----------
    elements
        The shadow's :class:`~shadows.core.elements.ShadowElements` (which imports this module: its type
        is not named here).
    slot
        The slot (``"obsm"``), or a uns level's path (``"uns/neighbors"``), or ``"raw/varm"``.
    stored_keys
        The keys the file stores under it.
    """

    def __init__(self, elements: Any, slot: str, stored_keys: Callable[[], list[str]]):
        self.elements = elements
        self.slot = slot
        self._stored_keys = stored_keys

    def _path(self, key: str) -> str:
        return f"{self.slot}/{key}"

    def _changes(self) -> Any:
        """The slot's :class:`~shadows.core.elements.MappingChanges`."""
        return self.elements.mapping_changes(self.slot, self._stored_keys)

    def __getitem__(self, key: str) -> Any:
        elements = self.elements
        if key is None and self.slot == "layers":
            return elements.shadow.X  # anndata >= 0.13 exposes X as layers[None]
        if elements.is_stale(self._path(key)):  # as before a private axis change
            return elements.before.slots[self.slot][key]
        changes = self._changes()
        if key in changes.staged:
            return changes.staged[key]
        if key in changes.inherited:
            return elements.select_staged(self.slot, changes.inherited[key])
        if key not in changes.stored:
            what = f"no such key; stored keys: {', '.join(changes.stored) or 'none'}"
            raise MissingElementError(element_message(elements.filename, self._path(key), what))
        return elements.element(self._path(key)).value()

    def __setitem__(self, key: str, value: Any) -> None:
        if key is None and self.slot == "layers":
            self.elements.shadow.X = value  # anndata >= 0.13 sets X as layers[None]
            return
        value = as_slot_value(self._path(key), value)
        self._check(key, value)
        self.elements.change(self._path(key), value)  # a view assigned to becomes a shadow of its own

    def __delitem__(self, key: str) -> None:
        """Delete ``key``: one the file stores is deleted in memory (▲; ``write(overwrite=True)`` removes
        it from the file), one only assigned in memory is forgotten.
        """
        if key is None and self.slot == "layers":
            del self.elements.shadow.X
            return
        if key not in self:  # checked before a view becomes a shadow of its own
            raise MissingElementError(element_message(self.elements.filename, self._path(key), "no such key"))
        stored = key in self._changes().stored
        self.elements.detach()
        self.elements.state.remove(self._path(key), stored=stored)

    def replace_all(self, values: Mapping[str, Any]) -> None:
        """``adata.obsm = {...}``: the slot holds exactly ``values`` from now on (stored keys not among
        them are deleted, by ``write(overwrite=True)`` from the file). Every key and value is checked
        before anything changes.
        """
        values = dict(values or {})
        has_x = self.slot == "layers" and None in values  # anndata >= 0.13 passes X as layers[None]
        x = values.pop(None, None)
        values = {key: as_slot_value(self._path(key), value) for key, value in values.items()}
        for key, value in values.items():
            self._check(key, value)
        if has_x:
            self.elements.shadow.X = x
        for key in self.own_keys():
            del self[key]
        for key, value in values.items():
            self[key] = value

    @property
    def parent(self) -> Any:
        """The shadow this slot belongs to (anndata's aligned mappings name their AnnData so)."""
        return self.elements.shadow

    def copy(self) -> dict[str, Any]:
        """A plain dict of every value (stored ones read), as anndata's ``adata.obsm.copy()`` is used."""
        return {key: self[key] for key in self}

    def own_keys(self) -> list[str]:
        """The slot's keys: stored, assigned in memory, and (in a view) its root's assigned ones; never
        anndata 0.13's ``None`` for X (what the shadow's own code iterates).
        """
        changes = self._changes()
        keys = list(changes.stored)
        keys += [k for k in changes.staged if k not in changes.stored]
        return keys + [k for k in changes.inherited if k not in keys]

    def _x_as_layer(self) -> bool:
        """Whether this is ``layers`` and anndata lists X in it as ``layers[None]`` (anndata >= 0.13)."""
        return self.slot == "layers" and X_IS_A_LAYER and self.elements.has("X")

    def __iter__(self) -> Iterator[str | None]:
        yield from self.own_keys()
        if self._x_as_layer():
            yield None

    def __len__(self) -> int:
        return len(self.own_keys()) + self._x_as_layer()

    def __contains__(self, key: object) -> bool:
        if key is None:
            return self._x_as_layer()
        changes = self._changes()
        return key in changes.staged or key in changes.stored or key in changes.inherited

    def is_staged(self, key: str) -> bool:
        """Whether ``key`` holds a value assigned in memory and not yet written (in a view: also one its
        root holds).
        """
        changes = self._changes()
        return key in changes.staged or key in changes.inherited

    def marked_keys(self) -> list[str]:
        """Keys with their markers (ᐁ held in memory, ▲ staged), for the repr."""
        return [k + marker(self.elements.is_held(self._path(k)), self.is_staged(k)) for k in self.own_keys()]

    def _check(self, key: str, value: Any) -> None:
        """Raise unless ``key`` may name an element of this slot and ``value`` fits it."""
        check_key(self.elements.filename, self.slot, key)
        check_nested_keys(self.elements.filename, self._path(key), value)
        self._validate(key, value)

    def _validate(self, key: str, value: Any) -> None:
        axes = ALIGNED_SLOT_AXES.get(self.slot)
        if axes is None:
            return
        shape = getattr(value, "shape", None)
        if shape is None:
            msg = f"{self.slot}['{key}']: expected an array-like with a shape, got {type(value).__name__}"
            raise ShapeError(f"{self.elements.filename}: {msg}")
        sizes = self.elements.shape
        expected = tuple(sizes[a] for a in axes)
        got = tuple(shape[: len(axes)])
        if got != expected:
            names = ("n_obs", "n_vars")
            wanted = " × ".join(f"{names[a]}={sizes[a]}" for a in axes)
            msg = f"{self.slot}['{key}']: expected leading dimensions {expected} ({wanted}), got shape {tuple(shape)}"
            raise ShapeError(f"{self.elements.filename}: {msg}")

    def __repr__(self) -> str:
        return f"{self.slot}:\t{', '.join(self.marked_keys())}"


class UnsMapping(ElementMapping):
    """A level of the nested ``uns`` mapping: nested groups are UnsMappings of their own.

    Values are what anndata holds in ``uns`` (numpy arrays, python scalars and strings, pandas frames,
    scipy matrices), whatever the array and table backends, as anndata's ``read_lazy`` keeps ``uns`` in
    memory: scanpy hashes and iterates them (``uns["<key>_colors"]``, ``uns["rank_genes_groups"]``).
    Each is read on first access and held (ᐁ) until ``clear_cache()``.
    """

    def __getitem__(self, key: str) -> Any:
        rel = self._path(key)
        changes = self._changes()
        if key in changes.staged or key not in changes.stored or self.elements.is_stale(rel):
            return super().__getitem__(key)
        if self.elements.layout.spec(rel).role == "mapping":
            return self.elements.uns_child(rel)
        return self.elements.element(rel).memory_value()

    def materialize(self) -> dict:
        """A plain nested dict of every value (stored ones read, staged ones as assigned)."""
        out = {}
        changes = self._changes()
        for key in self.own_keys():
            if key not in changes.stored or key in changes.staged:  # assigned in memory (here or in the root)
                out[key] = self[key]
                continue
            value = self[key]
            out[key] = value.materialize() if isinstance(value, UnsMapping) else self.elements.plain(self._path(key))
        return out
