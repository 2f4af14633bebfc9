"""The AnnData schema as shadows needs it: which elements are aligned to which axis.

One table, read by views (what to slice), assignments (what to validate), the repr and writers; nothing
here reads a file or imports the rest of shadows.
"""

from __future__ import annotations

#: The two dataframes of an AnnData, by axis (0: obs, 1: var).
FRAMES = ("obs", "var")

#: The aligned mapping slots: which axis (0 obs, 1 var) each axis of their values follows.
SLOT_AXES: dict[str, tuple[int, ...]] = {
    "layers": (0, 1),
    "obsm": (0,),
    "varm": (1,),
    "obsp": (0, 0),
    "varp": (1, 1),
}
#: MuData's maps from global positions to 1-based positions in each modality (0: absent).
MODALITY_MAP_AXES: dict[str, tuple[int, ...]] = {
    "obsmap": (0,),
    "varmap": (1,),
}
#: Every mapping slot whose values are aligned to axes (what assigning to them validates).
ALIGNED_SLOT_AXES: dict[str, tuple[int, ...]] = {**SLOT_AXES, **MODALITY_MAP_AXES}
#: The same for every element path (or path prefix) a view slices.
ELEMENT_AXES: dict[str, tuple[int | None, ...]] = {
    "X": (0, 1),
    "obs": (0,),
    "var": (1,),
    "raw/X": (0, None),  # raw keeps all its variables, as AnnData's views do
    **ALIGNED_SLOT_AXES,
}


def element_axes(rel: str) -> tuple[int | None, ...]:
    """Which view axes an element (path relative to the AnnData) is aligned to; ``()`` for none."""
    if rel in ELEMENT_AXES:
        return ELEMENT_AXES[rel]
    head = rel.split("/", 1)[0]
    if head in ("raw", "uns"):
        return ()
    return ELEMENT_AXES.get(head, ())
