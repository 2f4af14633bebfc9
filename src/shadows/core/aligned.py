"""Mapping slots of a shadow: layers, obsm, varm, obsp, varp, obsmap, varmap (aligned to axes) and uns
(nested).

Stored keys come from metadata; values are read on access through the shadow (and cached per its
backend). Assigning a key keeps the value in memory, staged (▲) until ``write()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shadows.cache import marker
from shadows.errors import MissingElementError, ShapeError, element_message
from shadows.names import check_key, check_nested_keys
from shadows.schema import ALIGNED_SLOT_AXES

if TYPE_CHECKING:
    from shadows.core.interface import ShadowLike


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
    """Stored and staged elements of one slot, read lazily through the owning shadow.

    The mapping holds no state of its own: stored keys come from the file's layout (``stored_keys``),
    changes (▲) and deletions from the shadow's element records (:mod:`shadows.core.state`).
    """

    def __init__(self, shadow: ShadowLike, slot: str, stored_keys: Callable[[], list[str]]):
        self._shadow = shadow
        self.slot = slot
        self._stored_keys = stored_keys

    def _path(self, key: str) -> str:
        return f"{self.slot}/{key}"

    @property
    def _changes(self) -> dict[str, Any]:
        """The changes of the slot's keys in this shadow (values, or the deletion marker)."""
        return self._shadow._state.children(self.slot)

    @property
    def _staged(self) -> dict[str, Any]:
        """Values assigned in memory (▲) to the slot's keys in this shadow."""
        deleted = self._shadow._state.deleted
        return {k: v for k, v in self._changes.items() if v is not deleted}

    @property
    def _deleted(self) -> set[str]:
        """Stored keys deleted in memory (removed from the file by ``write(overwrite=True)``)."""
        shadow = self._shadow
        deleted = shadow._state.deleted
        own = self._changes
        keys = {k for k, v in own.items() if v is deleted}
        if shadow.is_view:  # a view sees its root's deletions (unless it assigned the key itself)
            keys |= {k for k, v in shadow._root._state.children(self.slot).items() if v is deleted and k not in own}
        return keys

    @property
    def _stored(self) -> list[str]:
        """Keys the file stores, less those deleted in memory."""
        deleted = self._deleted
        return [k for k in self._stored_keys() if k not in deleted]

    def _inherited(self) -> dict[str, Any]:
        """In a view: the root's staged elements of this slot that the view does not shadow itself."""
        shadow = self._shadow
        if not shadow.is_view:
            return {}
        root = shadow._root._state
        own, stored = self._changes, self._stored
        return {k: v for k, v in root.children(self.slot).items()
                if v is not root.deleted and k not in own and k not in stored}

    def __getitem__(self, key: str) -> Any:
        if key is None and self.slot == "layers":
            return self._shadow.X  # anndata >= 0.13 exposes X as layers[None]
        if self._shadow._state.is_stale(self._path(key)):  # as before a private axis change
            return self._shadow._before._slots[self.slot][key]
        if key in self._staged:
            return self._staged[key]
        inherited = self._inherited()
        if key in inherited:
            return self._shadow._select_staged(self.slot, inherited[key])
        if key not in self._stored:
            what = f"no such key; stored keys: {', '.join(self._stored) or 'none'}"
            raise MissingElementError(element_message(self._shadow._ref.display, self._path(key), what))
        return self._shadow._element(self._path(key))

    def __setitem__(self, key: str, value: Any) -> None:
        if key is None and self.slot == "layers":
            self._shadow.X = value  # anndata >= 0.13 sets X as layers[None]
            return
        value = as_slot_value(self._path(key), value)
        self._check(key, value)
        self._shadow._detach()  # a view assigned to becomes a shadow of its own (as AnnData views do)
        self._shadow._state.change(self._path(key), value)

    def __delitem__(self, key: str) -> None:
        """Delete ``key``: one the file stores is deleted in memory (▲; ``write(overwrite=True)`` removes
        it from the file), one only assigned in memory is forgotten.
        """
        if key is None and self.slot == "layers":
            del self._shadow.X
            return
        if key not in self:  # checked before a view becomes a shadow of its own
            raise MissingElementError(element_message(self._shadow._ref.display, self._path(key), "no such key"))
        self._shadow._detach()
        self._shadow._state.remove(self._path(key), stored=key in self._stored)

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
            self._shadow.X = x
        for key in self.own_keys():
            del self[key]
        for key, value in values.items():
            self[key] = value

    @property
    def parent(self) -> ShadowLike:
        """The shadow this slot belongs to (anndata's aligned mappings name their AnnData so)."""
        return self._shadow

    def copy(self) -> dict[str, Any]:
        """A plain dict of every value (stored ones read), as anndata's ``adata.obsm.copy()`` is used."""
        return {key: self[key] for key in self}

    def own_keys(self) -> list[str]:
        """The slot's keys: stored, assigned in memory, and (in a view) its root's assigned ones; never
        anndata 0.13's ``None`` for X (what the shadow's own code iterates).
        """
        keys = list(self._stored)
        keys += [k for k in self._staged if k not in self._stored]
        return keys + [k for k in self._inherited() if k not in keys]

    def _x_as_layer(self) -> bool:
        """Whether this is ``layers`` and anndata lists X in it as ``layers[None]`` (anndata >= 0.13)."""
        return self.slot == "layers" and X_IS_A_LAYER and self._shadow._has("X")

    def __iter__(self) -> Iterator[str | None]:
        yield from self.own_keys()
        if self._x_as_layer():
            yield None

    def __len__(self) -> int:
        return len(self.own_keys()) + self._x_as_layer()

    def __contains__(self, key: object) -> bool:
        if key is None:
            return self._x_as_layer()
        return key in self._staged or key in self._stored or key in self._inherited()

    def is_staged(self, key: str) -> bool:
        """Whether ``key`` holds a value assigned in memory and not yet written (in a view: also one its
        root holds).
        """
        return key in self._staged or key in self._inherited()

    def marked_keys(self) -> list[str]:
        """Keys with their markers (ᐁ held in memory, ▲ staged), for the repr."""
        return [k + marker(self._shadow._is_cached(self._path(k)), self.is_staged(k)) for k in self.own_keys()]

    def _check(self, key: str, value: Any) -> None:
        """Raise unless ``key`` may name an element of this slot and ``value`` fits it."""
        check_key(self._shadow._ref.display, self.slot, key)
        check_nested_keys(self._shadow._ref.display, self._path(key), value)
        self._validate(key, value)

    def _validate(self, key: str, value: Any) -> None:
        axes = ALIGNED_SLOT_AXES.get(self.slot)
        if axes is None:
            return
        shape = getattr(value, "shape", None)
        if shape is None:
            msg = f"{self.slot}['{key}']: expected an array-like with a shape, got {type(value).__name__}"
            raise ShapeError(f"{self._shadow._ref.display}: {msg}")
        sizes = (self._shadow.n_obs, self._shadow.n_vars)
        expected = tuple(sizes[a] for a in axes)
        got = tuple(shape[: len(axes)])
        if got != expected:
            names = ("n_obs", "n_vars")
            wanted = " × ".join(f"{names[a]}={sizes[a]}" for a in axes)
            msg = f"{self.slot}['{key}']: expected leading dimensions {expected} ({wanted}), got shape {tuple(shape)}"
            raise ShapeError(f"{self._shadow._ref.display}: {msg}")

    def __repr__(self) -> str:
        return f"{self.slot}:\t{', '.join(self.marked_keys())}"


def is_graph(value: Any) -> bool:
    """Whether ``value`` is a lazy backend's value (a dask collection, an xarray object over dask, or
    read_lazy's ``Dataset2D``), e.g. one kept by ``persist()``, rather than an in-memory one.
    """
    return hasattr(value, "__dask_graph__") or hasattr(getattr(value, "ds", None), "__dask_graph__")


def in_memory(shadow: ShadowLike, rel: str) -> Any:
    """The stored element ``rel`` as anndata holds it in memory (numpy, scipy, pandas, python values),
    whatever the shadow's backends: read on first use (this view's part of it) and held (ᐁ) until
    ``clear_cache()``.

    Parameters
    ----------
    shadow
        The shadow (or view) that reads it.
    rel
        The element's path, e.g. ``"uns/louvain_colors"`` or ``"raw/X"``.

    Returns
    -------
    The value, as ``anndata.read_h5ad`` gives it. A graph kept by ``persist()`` is read into memory.
    """
    state = shadow._state
    held = state.held(rel)
    if not state.is_held(rel) or is_graph(held):
        return state.hold(rel, shadow._materialize(rel))
    return held


class UnsMapping(ElementMapping):
    """A level of the nested ``uns`` mapping: nested groups are UnsMappings of their own.

    Values are what anndata holds in ``uns`` (numpy arrays, python scalars and strings, pandas frames,
    scipy matrices), whatever the array and table backends, as anndata's ``read_lazy`` keeps ``uns`` in
    memory: scanpy hashes and iterates them (``uns["<key>_colors"]``, ``uns["rank_genes_groups"]``).
    Each is read on first access and held (ᐁ) until ``clear_cache()``.
    """

    def __getitem__(self, key: str) -> Any:
        rel = self._path(key)
        if key in self._staged or key not in self._stored or self._shadow._state.is_stale(rel):
            return super().__getitem__(key)
        if self._shadow._layout.spec(rel).role == "mapping":
            return self._shadow._uns_child(rel)
        return in_memory(self._shadow, rel)

    def materialize(self) -> dict:
        """A plain nested dict of every value (stored ones read, staged ones as assigned)."""
        out = {}
        for key in self.own_keys():
            if key not in self._stored or key in self._staged:  # assigned in memory (here or in the root)
                out[key] = self[key]
                continue
            value = self[key]
            out[key] = value.materialize() if isinstance(value, UnsMapping) else self._shadow._plain(self._path(key))
        return out
