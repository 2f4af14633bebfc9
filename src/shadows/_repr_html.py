"""HTML repr of shadows for Jupyter, built from metadata only (rendering a shadow reads no data).

One table per shadow: a row per element with its slot, key, marker (ᐁ held in memory, ▲ assigned in
memory), encoding, shape and dtype. Stored elements are described from the file's metadata, staged ones
from the value in memory. A view shows the shapes of its selection. A MuData lists its global slots and
then each modality in a collapsible block. The styles use Jupyter's theme variables where they exist, so
the table reads in light and dark themes.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from shadows._repr import _header
from shadows.cache import marker
from shadows.indexing.apply import element_axes

if TYPE_CHECKING:
    from shadows.core.interface import ShadowLike

_STYLE = """<style>
.shadows-repr {font-family: var(--jp-code-font-family, monospace); font-size: 12px;}
.shadows-repr table {border-collapse: collapse; margin: 4px 0 8px 0;}
.shadows-repr th, .shadows-repr td {padding: 2px 10px; text-align: left; vertical-align: top;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0);}
.shadows-repr th {font-weight: 600;}
.shadows-repr .shadows-header {font-weight: 600; margin: 4px 0;}
.shadows-repr .shadows-slot {color: var(--jp-content-font-color2, #555);}
.shadows-repr .shadows-marker {color: #c05800;}
.shadows-repr summary {cursor: pointer;}
.shadows-repr .shadows-legend {color: var(--jp-content-font-color2, #555);}
</style>"""
_COLUMNS = ("slot", "key", "encoding", "shape", "dtype")


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return " × ".join(str(n) for n in shape) if shape else "-"


def _view_shape(shadow: ShadowLike, rel: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``rel`` has in this shadow: the stored shape, with view-sliced axes at the view's sizes."""
    if shadow._view is None or not shape:  # neither a view nor subset in place
        return shape
    sizes = (shadow.n_obs, shadow.n_vars)
    return tuple(n if i >= len(axes := element_axes(rel)) or axes[i] is None else sizes[axes[i]]
                 for i, n in enumerate(shape))


def _stored_row(shadow: ShadowLike, slot: str, key: str, rel: str, cached: bool) -> tuple[str, ...]:
    spec = shadow._layout.spec(rel)
    shape = _view_shape(shadow, rel, tuple(spec.shape))
    dtype = "-" if spec.kind in ("mapping", "dataframe") or spec.dtype is None else str(spec.dtype)
    return slot, key + marker(cached, False), spec.encoding, _shape_text(shape), dtype


def _staged_row(slot: str, key: str, value: Any) -> tuple[str, ...]:
    kind = f"in memory: {type(value).__name__}"
    return slot, key + marker(False, True), kind, _shape_text(getattr(value, "shape", None)), \
        str(getattr(value, "dtype", "-"))


def _slot_rows(shadow: ShadowLike, slot: str) -> list[tuple[str, ...]]:
    mapping = shadow._slots[slot]
    rows = []
    for key in mapping.own_keys():
        if mapping.is_staged(key):
            rows.append(_staged_row(slot, key, mapping[key]))  # a staged value is in memory already
        else:
            rows.append(_stored_row(shadow, slot, key, f"{slot}/{key}", shadow._is_cached(f"{slot}/{key}")))
    return rows


def _frame_rows(shadow: ShadowLike, slot: str) -> list[tuple[str, ...]]:
    spec = getattr(shadow._layout, slot)
    cached = shadow._is_cached(slot)
    staged = shadow._visible_staged_columns(slot)
    n_rows = shadow.n_obs if slot == "obs" else shadow.n_vars
    rows = [(slot, spec.index_key + marker(cached, False), "index", str(n_rows), "-")]
    for key in shadow._frame_keys(slot):
        if key in staged:
            rows.append(_staged_row(slot, key, staged[key]))
        else:
            column = spec.column(key)
            rows.append((slot, key + marker(cached, False), column.encoding, str(n_rows), str(column.dtype)))
    return rows


def _anndata_rows(shadow: ShadowLike) -> list[tuple[str, ...]]:
    layout = shadow._layout
    rows = []
    if shadow._is_changed("X"):
        if shadow._has("X"):
            rows.append(_staged_row("X", "", shadow.X))
    elif layout.has("X"):
        rows.append(_stored_row(shadow, "X", "", "X", shadow._is_cached("X")))
    rows += _slot_rows(shadow, "layers")
    rows += _frame_rows(shadow, "obs") + _frame_rows(shadow, "var")
    for slot in ("obsm", "varm", "obsp", "varp", "uns"):
        rows += _slot_rows(shadow, slot)
    if shadow.raw is not None:
        for part in ("X", "var"):
            if layout.has(f"raw/{part}"):
                rel = f"raw/{part}"
                rows.append(_stored_row(shadow, "raw", part, rel, shadow._is_cached(rel)))
    return rows


def _mudata_rows(shadow: ShadowLike) -> list[tuple[str, ...]]:
    rows = _frame_rows(shadow, "obs") + _frame_rows(shadow, "var")
    for slot in ("obsm", "varm", "obsp", "varp", "uns", "obsmap", "varmap"):
        rows += _slot_rows(shadow, slot)
    return rows


def _table(rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{name}</th>" for name in _COLUMNS)
    body = []
    for slot, key, *rest in rows:
        cells = [f"<td class='shadows-slot'>{escape(slot)}</td>", f"<td>{_key_html(key)}</td>"]
        cells += [f"<td>{escape(text)}</td>" for text in rest]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _key_html(key: str) -> str:
    """The key, its marker set apart so it can be styled."""
    for mark in ("▲", "ᐁ"):
        if key.endswith(mark):
            return f"{escape(key[: -len(mark)])}<span class='shadows-marker'>{mark}</span>"
    return escape(key)


def _block(shadow: ShadowLike) -> str:
    if not hasattr(shadow, "_KIND"):  # an AnnData given in memory as a MuData's modality (mod/<name>▲)
        return f"<pre>{escape(repr(shadow))}</pre>"
    header = f"<div class='shadows-header'>{escape(_header(shadow))}</div>"
    if shadow._KIND != "MuData":
        return header + _table(_anndata_rows(shadow))
    parts = [header, _table(_mudata_rows(shadow))]
    for name, modality in shadow.mod.items():
        title = f"mod['{escape(name)}']: {modality.n_obs} × {modality.n_vars}"
        parts.append(f"<details><summary>{title}</summary>{_block(modality)}</details>")
    return "".join(parts)


def html_repr(shadow: ShadowLike) -> str:
    """The HTML a notebook shows for a shadow or a view: the text repr's content as a table, with each
    element's encoding, shape and dtype from metadata (no data is read).
    """
    legend = ("<div class='shadows-legend'><span class='shadows-marker'>ᐁ</span> held in memory (clear_cache() "
              "frees it) · <span class='shadows-marker'>▲</span> assigned in memory, not yet written</div>")
    return f"<div class='shadows-repr'>{_STYLE}{_block(shadow)}{legend}</div>"
