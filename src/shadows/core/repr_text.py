"""Text repr of shadows, from :meth:`~shadows.core.base.ShadowBase.describe` (printing a shadow reads no
data; a MuData view's modalities need obsmap/varmap for their shapes, one small vector each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shadows.core.description import Description


def _slot_line(description: Description, slot: str) -> list[str]:
    """The repr's line of ``slot`` (none when it is empty); obs/var list their columns only, as anndata's
    repr and ``obs_keys()`` do, not the name of their index.
    """
    keys = [e.marked_key for e in description.columns(slot)]
    return [f"  {slot}:\t" + ", ".join(keys)] if keys else []


def _anndata_lines(description: Description) -> list[str]:
    lines = []
    x = description.slot("X")
    if x:
        lines.append("  X" + x[0].marked_key)
    for slot in ("layers", "obs", "var", "obsm", "varm", "obsp", "varp", "uns", "raw"):
        lines += _slot_line(description, slot)
    return lines


def _mudata_lines(description: Description) -> list[str]:
    lines = []
    for slot in ("obs", "var", "obsm", "varm", "obsp", "varp", "uns", "obsmap", "varmap"):
        lines += _slot_line(description, slot)
    n_mod = len(description.modalities)
    lines.append(f"  mod:\t{n_mod} modalit{'y' if n_mod == 1 else 'ies'}")
    for name, modality in description.modalities.items():
        memory = " (in memory▲)" if modality.source is None else ""
        lines.append(f"    {name}: {modality.shape[0]} x {modality.shape[1]}{memory}")
        lines += ["    " + line for line in _body_lines(modality)]
    return lines


def _body_lines(description: Description) -> list[str]:
    return _mudata_lines(description) if description.is_mudata else _anndata_lines(description)


def text_repr(description: Description) -> str:
    """The repr of DESIGN.md section 1: header, then one line per non-empty slot with markers (ᐁ held in
    memory, ▲ assigned in memory); a MuData adds obsmap/varmap, ``mod:`` and each modality's block.

    obs and var list their columns, as anndata's repr does (the index's name is not a column), and are
    left out when they have none.

    Parameters
    ----------
    description
        What the shadow says about itself (:meth:`~shadows.core.base.ShadowBase.describe`).
    """
    return "\n".join([description.header, *_body_lines(description)])
