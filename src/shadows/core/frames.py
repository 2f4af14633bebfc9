"""obs/var dataframes that tell their shadow about columns assigned in memory.

Scanpy and muon users edit obs in place (``adata.obs["leiden"] = ...``, ``mdata.obs["rna:cell_type"] =
mdata["rna"].obs["cell_type"]``). A shadow hands out a :class:`TrackedFrame` so such an assignment is
staged (▲ in the repr): it survives ``clear_cache()`` and is what ``write()`` will push to the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from shadows.errors import InvalidElementKeyError, ShapeError
from shadows.names import column_problem

OnSet = Callable[[str, pd.Series | None], None]
"""Called with a column's new values, or with ``None`` when the column was deleted."""


class _DataFrameType(type):
    """The type of :class:`TrackedFrame`: every pandas DataFrame counts as an instance of it.

    A shadow's ``obs``/``var`` is an AnnData's DataFrame that also reports assignments; code that
    compares frame types the way pandas does (``assert_frame_equal(frame, adata.var)`` checks
    ``isinstance(frame, type(adata.var))``, 96 of scanpy's own tests do) must see a DataFrame, as it
    would on an AnnData.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, pd.DataFrame)


class TrackedFrame(pd.DataFrame, metaclass=_DataFrameType):
    """A pandas DataFrame that reports ``frame[key] = value`` to a callback.

    Everything derived from it (slices, copies, results of operations) is a plain DataFrame, so only
    the frame a shadow handed out reports assignments. Other ways of setting values (``.loc``,
    ``.insert``) change the frame in memory without staging. For ``isinstance``, every DataFrame is a
    TrackedFrame (see :class:`_DataFrameType`); ``type(frame) is TrackedFrame`` tells one apart.
    """

    _metadata: ClassVar[list[str]] = []

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def __setitem__(self, key: Any, value: Any) -> None:
        where = self.__dict__.get("_where")
        if where and isinstance(key, str) and _is_sequence(value) and len(value) != len(self):
            raise ShapeError(f"{where}['{key}']: expected {len(self)} values (one per row), got {len(value)}")
        on_set = self.__dict__.get("_on_set")
        # one column, or several at once (scanpy's calculate_qc_metrics: obs[list_of_names] = frame)
        keys = [key] if isinstance(key, str) else list(key) if isinstance(key, list | pd.Index | np.ndarray) else []
        names = [name for name in keys if isinstance(name, str)]
        if on_set is not None:
            for name in names:  # each becomes a column in the file: checked before the frame changes
                problem = column_problem(name)
                if problem is not None:
                    raise InvalidElementKeyError(f"{where}[{name!r}]: invalid column name: {problem}")
        super().__setitem__(key, value)
        if on_set is None:
            return
        for name in names:
            on_set(name, self[name])

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        on_set = self.__dict__.get("_on_set")
        if on_set is not None and isinstance(key, str):
            on_set(key, None)


def _is_sequence(value: Any) -> bool:
    """Values assigned by position (not a scalar, and not a pandas object aligned on the index)."""
    if isinstance(value, str | bytes | pd.Series | pd.DataFrame) or np.ndim(value) == 0:
        return False
    return hasattr(value, "__len__")


def tracked(frame: pd.DataFrame, on_set: OnSet, where: str = "") -> TrackedFrame:
    """``frame`` (its data shared, not copied) as a :class:`TrackedFrame` reporting to ``on_set``;
    ``where`` (``"file.h5ad: obs"``) names it in errors.
    """
    out = TrackedFrame(frame)
    object.__setattr__(out, "_on_set", on_set)
    object.__setattr__(out, "_where", where)
    return out


def with_columns(frame: pd.DataFrame, columns: Mapping[str, pd.Series]) -> pd.DataFrame:
    """``frame`` with ``columns`` (staged in memory) set by position, keeping their dtypes."""
    for key, values in columns.items():
        frame[key] = values.array if len(values) == len(frame) else values
    return frame
