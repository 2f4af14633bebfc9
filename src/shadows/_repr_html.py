"""HTML repr of shadows for Jupyter, built from metadata only (rendering a shadow reads no data).

One table per shadow: a row per element with its slot, key, marker (ᐁ held in memory, ▲ assigned in
memory), encoding, shape and dtype. Stored elements are described from the file's metadata, staged ones
from the value in memory. A view shows the shapes of its selection. A MuData lists its global slots and
then each modality in a collapsible block. The styles use Jupyter's theme variables where they exist, so
the table reads in light and dark themes.
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
.shadows-repr .shadows-legend {color: var(--jp-content-font-color2, #555);}
</style>"""
_COLUMNS = ("slot", "key", "encoding", "shape", "dtype")


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return " × ".join(str(n) for n in shape) if shape else "-"


def _rows(description: Description) -> list[tuple[str, ...]]:
    return [(e.slot, e.marked_key, e.encoding, _shape_text(e.shape), e.dtype or "-") for e in description.elements]


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
    parts = [f"<div class='shadows-header'>{escape(description.header)}</div>", _table(_rows(description))]
    for name, modality in description.modalities.items():
        title = f"mod['{escape(name)}']: {modality.shape[0]} × {modality.shape[1]}"
        parts.append(f"<details><summary>{title}</summary>{_block(modality)}</details>")
    return "".join(parts)


def html_repr(description: Description) -> str:
    """The HTML a notebook shows for a shadow or a view: the text repr's content as a table, with each
    element's encoding, shape and dtype from metadata (no data is read).
    """
    legend = ("<div class='shadows-legend'><span class='shadows-marker'>ᐁ</span> held in memory (clear_cache() "
              "frees it) · <span class='shadows-marker'>▲</span> assigned in memory, not yet written</div>")
    return f"<div class='shadows-repr'>{_STYLE}{_block(description)}{legend}</div>"
