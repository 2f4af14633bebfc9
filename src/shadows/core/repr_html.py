"""HTML repr of shadows for Jupyter, built from metadata only (rendering a shadow reads no data).

A collapsible section per slot (as mudata 0.4's HTML repr has), its header counting what it holds, and in
it a row per element: key, marker (ᐁ held in memory, ▲ assigned in memory), encoding, shape, dtype, and
the number of categories of a categorical column. Stored elements are described from the file's
metadata, changed ones from the value in memory (:meth:`~shadows.core.base.ShadowBase.describe`). A view
shows the shapes of its selection. A MuData lists its global slots and then each modality in a
collapsible block. The styles use Jupyter's theme variables where they exist, so it reads in light and
dark themes.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shadows.core.description import Description

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
.shadows-repr details.shadows-slot-section {margin-left: 4px;}
.shadows-repr details.shadows-slot-section > summary {font-weight: 600;}
.shadows-repr details.shadows-mod {margin: 6px 0 0 4px;}
.shadows-repr .shadows-count {color: var(--jp-content-font-color2, #555); font-weight: normal;}
.shadows-repr .shadows-legend {color: var(--jp-content-font-color2, #555);}
</style>"""
_COLUMNS = ("slot", "key", "encoding", "shape", "dtype", "")
#: Slots in the order sections are shown, and what their headers count.
_SECTIONS = {"X": "", "layers": "layer", "obs": "column", "var": "column", "obsm": "key", "varm": "key",
             "obsp": "key", "varp": "key", "uns": "key", "raw": "part", "obsmap": "modality", "varmap": "modality"}


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return " × ".join(str(n) for n in shape) if shape else "-"


def _rows(elements: list) -> list[tuple[str, ...]]:
    return [(e.slot, e.marked_key, e.encoding, _shape_text(e.shape), e.dtype or "-", e.detail) for e in elements]


def _count(slot: str, elements: list) -> str:
    noun = _SECTIONS[slot]
    if not noun:
        return ""
    n = len(elements)
    plural = "modalities" if noun == "modality" else noun + "s"
    return f" <span class='shadows-count'>({n} {noun if n == 1 else plural})</span>"


#: A section with more rows than this starts collapsed (its header still counts them).
OPEN_SECTION_ROWS = 12


def _sections(description: Description) -> str:
    parts = []
    for slot in _SECTIONS:
        elements = description.columns(slot)  # obs/var: their columns, not the index (as anndata lists them)
        if elements:
            state = " open" if len(elements) <= OPEN_SECTION_ROWS else ""
            parts.append(f"<details class='shadows-slot-section'{state}><summary>{escape(slot)}"
                         f"{_count(slot, elements)}</summary>{_table(_rows(elements))}</details>")
    return "".join(parts)


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


def _block(description: Description) -> str:
    parts = [f"<div class='shadows-header'>{escape(description.header)}</div>", _sections(description)]
    for name, modality in description.modalities.items():
        title = f"mod['{escape(name)}']: {modality.shape[0]} × {modality.shape[1]}"
        parts.append(f"<details class='shadows-mod'><summary>{title}</summary>{_block(modality)}</details>")
    return "".join(parts)


def html_repr(description: Description) -> str:
    """The HTML a notebook shows for a shadow or a view: the text repr's content as a table, with each
    element's encoding, shape and dtype from metadata (no data is read).
    """
    legend = ("<div class='shadows-legend'><span class='shadows-marker'>ᐁ</span> held in memory (clear_cache() "
              "frees it) · <span class='shadows-marker'>▲</span> assigned in memory, not yet written</div>")
    return f"<div class='shadows-repr'>{_STYLE}{_block(description)}{legend}</div>"
