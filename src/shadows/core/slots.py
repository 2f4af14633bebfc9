"""AnnData's slot attributes, written once: each is a property that delegates to the shadow's machinery.

``adata.obsm`` (and varm, obsp, varp, uns, layers...) gets, assigns and deletes through the shadow's
mapping of that slot; ``adata.obs`` / ``adata.var`` through its served element and its frame changes.
Deleting behaves as anndata's: a mapping becomes empty, a dataframe keeps its names and loses its columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def mapping_slot(slot: str, doc: str) -> property:
    """The property of the aligned or unstructured mapping ``slot`` (``"obsm"``, ``"uns"``...)."""

    def get(shadow: Any) -> Any:
        return shadow._slots[slot]

    def assign(shadow: Any, values: Mapping[str, Any]) -> None:
        shadow._slots[slot].replace_all(values)

    def delete(shadow: Any) -> None:
        shadow._slots[slot].replace_all({})  # as AnnData: an empty mapping

    return property(get, assign, delete, doc)


def frame_slot(frame: str, doc: str) -> property:
    """The property of the dataframe ``frame`` (``"obs"`` or ``"var"``)."""

    def get(shadow: Any) -> Any:
        return shadow._element(frame)

    def assign(shadow: Any, value: pd.DataFrame) -> None:
        shadow._set_frame(frame, value)

    def delete(shadow: Any) -> None:
        # as AnnData: every column goes (deleted from the file by ``write(overwrite=True)``), the names stay
        shadow._set_frame(frame, pd.DataFrame(index=shadow._names(frame)))

    return property(get, assign, delete, doc)


def private_frame(frame: str) -> property:
    """Anndata's private ``_obs`` / ``_var``, which muon's in-place filters assign
    (``adata._obs = adata.obs[mask]``).
    """

    def get(shadow: Any) -> Any:
        return shadow._element(frame)

    def assign(shadow: Any, value: pd.DataFrame) -> None:
        shadow._set_private_frame(frame, value)

    return property(get, assign)


def names_slot(frame: str, doc: str) -> property:
    """The property of ``obs_names`` / ``var_names`` (read alone, without the columns; assignable ▲)."""

    def get(shadow: Any) -> pd.Index:
        return shadow._names(frame)

    def assign(shadow: Any, names: Any) -> None:
        shadow._set_names(frame, names)

    return property(get, assign, None, doc)
