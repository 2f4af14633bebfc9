"""The files an atlas is made of: what users pass (paths, globs, URLs, shadows and views of shadows) turned
into :class:`~shadows.backends.FileRef` s with, for a view, the :class:`Subset` of its file it keeps; and
each file's identity (what says it has not changed since its metadata was read:
:mod:`shadows.backends.identity`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shadows.backends import FileRef, resolve
from shadows.backends import identity as stored
from shadows.backends.remote import redact
from shadows.errors import ShadowsError, ShadowsFileNotFoundError
from shadows.indexing.keys import AxisIndex, as_positions, is_full


class SourceChangedError(ShadowsError, RuntimeError):
    """A source of an atlas changed (size, time or content identity) since its catalog was written."""


class SourceMissingError(ShadowsFileNotFoundError):
    """A source of an atlas is gone (or cannot be reached) since its catalog was written."""


class UnreadableSourceError(ShadowsError, OSError):
    """A source's metadata could not be read when the atlas was opened."""


@dataclass(frozen=True, eq=False)
class Subset:
    """The rows and genes of its file that a view given as a source keeps: positions in the file, in the
    view's order (``None``: every one, in the file's order).
    """

    rows: AxisIndex | None = None
    cols: AxisIndex | None = None
    #: Per categorical obs column, each stored code's code among the categories the view's rows use (-1:
    #: unused; anndata's views drop unused categories): filled in by the catalog.
    recode: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, obs: AxisIndex, var: AxisIndex, n_obs: int, n_vars: int) -> Subset:
        """The subset keeping ``obs`` and ``var`` of a file with that many rows and genes. A view of every
        row and gene is a subset still: anndata's views drop the categories no row uses.
        """
        return cls(None if is_full(obs, n_obs) else obs, None if is_full(var, n_vars) else var)

    @property
    def key(self) -> str:
        """What tells this subset from another of the same file (a catalog's entries are matched by it)."""
        return "/".join("all" if p is None else f"{len(p)}:{zlib.crc32(as_positions(p).astype('<i8').tobytes()):08x}"
                        for p in (self.rows, self.cols))

    def to_json(self) -> dict[str, Any]:
        return {"rows": _positions_to_json(self.rows), "cols": _positions_to_json(self.cols),
                "recode": {k: [int(c) for c in v] for k, v in self.recode.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Subset | None:
        if data is None:
            return None
        return cls(_positions_from_json(data["rows"]), _positions_from_json(data["cols"]),
                   {k: np.asarray(v, dtype=np.int64) for k, v in data["recode"].items()})


def _positions_to_json(positions: AxisIndex | None) -> Any:
    if positions is None:
        return None
    if isinstance(positions, range):
        return {"range": [positions.start, positions.stop, positions.step]}
    return [int(p) for p in positions]


def _positions_from_json(data: Any) -> AxisIndex | None:
    if data is None:
        return None
    if isinstance(data, Mapping):
        return range(*data["range"])
    return np.asarray(data, dtype=np.int64)


def expand(sources: Any, storage_options: Mapping[str, Any] | None = None) -> list[tuple[FileRef, Subset | None]]:
    """The files ``sources`` names, in order, each with the :class:`Subset` of it a view keeps (``None``:
    the whole file): paths, globs (sorted matches), fsspec URLs (globs too), shadows (their file) and
    views of shadows (their file and selection). A single path, glob or shadow may be given alone.

    Raises
    ------
    ShadowsFileNotFoundError
        A path does not exist, or a glob matches nothing (the message names it).
    ValueError
        A shadow (or view) holds changes its file does not have: the atlas reads files.
    """
    if isinstance(sources, str | os.PathLike) or hasattr(sources, "filename"):
        sources = [sources]
    refs: list[tuple[FileRef, Subset | None]] = []
    for item in sources:
        subset = _subset(item)
        for path in _paths(item, storage_options):
            refs.append((resolve(path, storage_options=storage_options), subset))
    if not refs:
        raise ValueError("shadows.concat: no sources given")
    return refs


def paths(sources: Any, storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Each source ``sources`` names (globs expanded, shadows' files) as its reference's ``full_path``
    spells it and the key of the view's :class:`Subset` (``""``: the whole file), without opening any
    file: what a catalog's entries are matched with.
    """
    if isinstance(sources, str | os.PathLike) or hasattr(sources, "filename"):
        sources = [sources]
    out = []
    for item in sources:
        subset = _subset(item)
        out += [(stored.absolute(path), subset.key if subset else "") for path in _paths(item, storage_options)]
    return out


def _paths(item: Any, storage_options: Mapping[str, Any] | None) -> Iterable[str]:
    if hasattr(item, "filename") and hasattr(item, "is_view"):
        return [item.filename]
    text = os.fspath(item)
    matches = stored.matching(text, storage_options)
    if not matches:
        raise ShadowsFileNotFoundError(f"{redact(text)}: the pattern matches no file or Zarr store")
    return matches


def _subset(item: Any) -> Subset | None:
    """The subset of its file a shadow or view keeps (``None`` for a path, or a whole file)."""
    if not (hasattr(item, "filename") and hasattr(item, "is_view")):
        return None
    from shadows.core.base import shadow_elements

    elements = shadow_elements(item)
    pending = [*elements.state.changes(), *elements.state.changed_in_place()]
    if elements.is_view:
        pending += [*elements.root.state.changes(), *elements.root.state.changed_in_place()]
    if pending:
        raise ValueError(f"{item.filename}: this shadow holds changes its file does not have ({', '.join(pending)}): "
                         "an atlas reads its sources' files; write() them first, or pass the shadow's copy")
    if elements.view is None:
        return None
    return Subset.of(*elements.view, elements.layout.n_obs, elements.layout.n_vars)


def identity(ref: FileRef) -> list[Any]:
    """What says the source at ``ref`` is unchanged (:func:`shadows.backends.identity.identity`), read
    without opening it.

    Raises
    ------
    SourceMissingError
        Nothing is there any more (the message names the source).
    """
    try:
        return stored.identity(ref)
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None


def check_unchanged(ref: FileRef, expected: list[Any]) -> None:
    """Raise :class:`SourceChangedError` naming the source unless its identity is still ``expected``."""
    try:
        found = stored.changed_identity(ref, expected)
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None
    if found is not None:
        raise SourceChangedError(
            f"{redact(ref.path)}: this source changed since the atlas's catalog was written (identity "
            f"{expected!r}, now {found!r}); reopen the atlas without the catalog, or load the catalog with "
            "on_change='refresh'")


def stamped(ref: FileRef, identity: list[Any]) -> FileRef:
    """``ref`` carrying the source's identity as its content stamp: a source refreshed in the catalog (a
    new identity) is read through a handle opened anew, not one this process opened on its old content
    (:meth:`shadows.backends.registry.FileEntry.follow`).
    """
    return replace(ref, content=(-1, zlib.crc32(repr(identity).encode())))
