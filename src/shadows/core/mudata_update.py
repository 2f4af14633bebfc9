"""``MuData.update()`` for a MuData shadow: the global obs (or var) made to match the modalities again.

mudata's rules for this are intricate (which rows are kept and in what order, how modalities sharing or
duplicating names are joined, how new rows are filled), so they are not rewritten here: mudata's own
``update`` runs on a stand-in MuData built from the names alone (modalities of names without data, the
global names, and a probe column of row positions), and its result says what to do with the shadow's
stored data: which current row each new row is (the probe), and the new obsmap/varmap.

- Every new row is a current one (filtered, reordered, a modality deleted): the global elements are
  subset in place (nothing read; reads pushed down), and only the maps and modality masks change (▲).
- New rows appear (a modality added or renamed): the global elements along that axis are read and given
  to a second stand-in, where mudata reindexes them (filling new rows as mudata does); they are kept in
  memory (▲), and the dataframe is replaced whole.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import pandas as pd

from shadows.core import annotations
from shadows.core.element import computed
from shadows.schema import FRAMES

#: Key of the probe column of row positions in the stand-in (not a name mudata or a user would take).
_PROBE = "__shadows_row_positions__"


def update_axis(shadow: Any, axis: int) -> None:
    """Make the global ``obs`` (axis 0) or ``var`` (axis 1) of a MuData shadow (its elements, ``shadow``)
    match its modalities.
    """
    frame_rel = FRAMES[axis]
    names = annotations.names(shadow, frame_rel)
    maps = _values(shadow, f"{frame_rel}map")
    probe = {_PROBE: np.arange(len(names), dtype=np.float64)}
    result = _stand_in(shadow, {frame_rel: pd.DataFrame(index=names), f"{frame_rel}m": probe,
                                f"{frame_rel}map": maps})
    positions = np.asarray(getattr(result, f"{frame_rel}m")[_PROBE], dtype=np.float64).reshape(-1)
    new_maps = {k: np.asarray(v) for k, v in getattr(result, f"{frame_rel}map").items()}
    slot_m, slot_p = shadow.slots[f"{frame_rel}m"], shadow.slots[f"{frame_rel}p"]
    if np.isnan(positions).any():
        data = {frame_rel: shadow.plain(frame_rel), f"{frame_rel}map": maps,
                f"{frame_rel}m": _values(shadow, f"{frame_rel}m"), f"{frame_rel}p": _values(shadow, f"{frame_rel}p")}
        result = _stand_in(shadow, data)
        annotations.replace_frame(shadow, frame_rel, getattr(result, frame_rel).copy())
        slot_p.replace_all(dict(getattr(result, f"{frame_rel}p")))
        masks = dict(getattr(result, f"{frame_rel}m"))
    else:
        kept = positions.astype(np.int64)
        if len(kept) != len(names) or (kept != np.arange(len(names))).any():
            shadow.subset_in_place((kept, slice(None)) if axis == 0 else (slice(None), kept))
        new_names = getattr(result, f"{frame_rel}_names")
        if not new_names.equals(annotations.names(shadow, frame_rel)):  # mudata made duplicated names unique
            annotations.set_names(shadow, frame_rel, new_names)
        masks = {k: np.asarray(v) for k, v in getattr(result, f"{frame_rel}m").items() if k in shadow.mod}
    for key, value in masks.items():  # mudata keeps a mask per modality (and everything reindexed)
        if key != _PROBE:
            slot_m[key] = value
    shadow.slots[f"{frame_rel}map"].replace_all(new_maps)


def _values(shadow: Any, slot: str) -> dict[str, Any]:
    """Every value of a global slot as numpy/scipy/pandas (stored ones read)."""
    return {k: computed(v) for k, v in shadow.slot_values(slot, shadow.plain).items()}


def _stand_in(shadow: Any, globals_: dict[str, Any]) -> Any:
    """A MuData of ``shadow``'s modalities' names (no data) and ``globals_``, updated by mudata."""
    import anndata
    import mudata

    modalities = {name: anndata.AnnData(obs=pd.DataFrame(index=m.obs_names), var=pd.DataFrame(index=m.var_names))
                  for name, m in shadow.mod.items()}
    # mudata < 0.4 pulls the modalities' columns on update unless told not to (0.4 has no such option)
    options = mudata.set_options(pull_on_update=False) if hasattr(mudata, "set_options") else contextlib.nullcontext()
    with options, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # mudata keeps (and changes) the dicts it is given: it gets its own
        return mudata.MuData(modalities, axis=shadow.layout.axis,
                             **{k: dict(v) if isinstance(v, dict) else v for k, v in globals_.items()})

