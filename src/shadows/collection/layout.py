"""The map of an atlas: what a one-file shadow's layout answers (which elements exist, their specs, the
keys of each slot, n_obs and n_vars), answered from the catalog and the join, so that an
:class:`~shadows.core.anndata.AnnDataShadow` serves an atlas as it serves a file.
"""

from __future__ import annotations

from typing import Any

from shadows.backends import FileRef
from shadows.core.layout import ElementMap
from shadows.elements.base import ElementSpec
from shadows.errors import MissingElementError, element_message

#: Mapping slots of an AnnData (uns aside) that an atlas answers for.
SLOTS = ("layers", "obsm", "varm", "obsp", "varp")


class AtlasLayout(ElementMap):
    """What a shadow asks of its layout, for an atlas (:class:`shadows.core.layout.ElementMap`).

    Parameters
    ----------
    ref
        The atlas's own reference (its catalog's path, or a description): what messages name.
    specs
        Every element by its path relative to the AnnData root (``"X"``, ``"obs"``, ``"layers/counts"``,
        ``"uns/a/b"``...).
    children
        Keys of each mapping (``"layers"``, ``"obsm"``, ``"uns"``, ``"uns/a"``...).
    """

    def __init__(self, ref: FileRef, specs: dict[str, ElementSpec], children: dict[str, list[str]]):
        self.ref = ref
        self._specs = specs
        self._children = {slot: [] for slot in SLOTS} | children
        self.obs = specs["obs"]
        self.var = specs["var"]
        #: How the atlas was joined (:func:`shadows.concat`'s options) and each source's column of each
        #: joined gene (-1: not measured there): what ``write()`` needs to cut changes per source and to
        #: join the sources again after writing into them.
        self.options: dict[str, Any] = {}
        self.columns: list[Any] = []
        #: The catalog file the atlas was opened with (rewritten after ``write()``), or ``None``.
        self.catalog_path: str | None = None

    def path(self, rel: str) -> str:
        """The element's path (relative to the atlas's root: there is no file)."""
        return self.ref.element_path(rel)

    def has(self, rel: str) -> bool:
        """Whether the atlas has the element (or a mapping of that name with keys; uns always)."""
        return rel in self._specs or bool(self._children.get(rel)) or rel == "uns"

    def spec(self, rel: str) -> ElementSpec:
        """The element's spec."""
        try:
            return self._specs[rel]
        except KeyError:
            raise MissingElementError(element_message(self.ref.display, rel, "not in the atlas")) from None

    def children(self, rel: str) -> list[str]:
        """Keys of a mapping element."""
        return list(self._children.get(rel, []))
