"""Text repr of shadows, built from metadata only (printing a shadow reads no data).

A MuData's repr reads each modality's shape; for a view that needs obsmap/varmap (the only values it
reads: one small integer vector per modality and axis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadows.cache import marker

if TYPE_CHECKING:
    from shadows.core.interface import ShadowLike

_AXIS_NOTE = {0: "", 1: " (shared var)", -1: " (shared obs and var)"}


def _frame_line(shadow: ShadowLike, slot: str) -> str:
    spec = getattr(shadow._layout, slot)
    cached = shadow._is_cached(slot)
    staged = shadow._visible_staged_columns(slot)
    names = [n + marker(cached, n in staged) for n in (spec.index_key, *shadow._frame_keys(slot))]
    return f"  {slot}:\t" + ", ".join(names)


def _header(shadow: ShadowLike) -> str:
    note = _AXIS_NOTE.get(shadow.axis, "") if shadow._KIND == "MuData" else ""
    header = f"{shadow._KIND} Shadow object with n_obs × n_vars = {shadow.n_obs} × {shadow.n_vars}{note}"
    layout = shadow._layout
    if shadow.is_view:
        header = f"View of {header} (original {layout.n_obs} × {layout.n_vars})"
    elif shadow._view is not None:
        header = f"{header} (subset of the file's {layout.n_obs} × {layout.n_vars})"
    return header


def _slot_lines(shadow: ShadowLike, slots: tuple[str, ...]) -> list[str]:
    return [f"  {shadow._slots[slot]!r}" for slot in slots if shadow._slots[slot].own_keys()]


def _anndata_lines(shadow: ShadowLike) -> list[str]:
    lines = []
    if shadow._has("X"):
        lines.append("  X" + marker(shadow._is_cached("X"), shadow._is_changed("X")))
    lines += _slot_lines(shadow, ("layers",))
    lines.append(_frame_line(shadow, "obs"))
    lines.append(_frame_line(shadow, "var"))
    lines += _slot_lines(shadow, ("obsm", "varm", "obsp", "varp", "uns"))
    if shadow.raw is not None:
        parts = [p for p in ("X", "var", "varm") if shadow._layout.has(f"raw/{p}")]
        lines.append("  raw:\t" + ", ".join(p + marker(shadow._is_cached(f"raw/{p}"), False) for p in parts))
    return lines


def _mudata_lines(shadow: ShadowLike) -> list[str]:
    lines = [_frame_line(shadow, "obs"), _frame_line(shadow, "var")]
    lines += _slot_lines(shadow, ("obsm", "varm", "obsp", "varp", "uns", "obsmap", "varmap"))
    n_mod = len(shadow.mod)
    lines.append(f"  mod:\t{n_mod} modalit{'y' if n_mod == 1 else 'ies'}")
    for name, modality in shadow.mod.items():
        lines.append(f"    {name}: {modality.n_obs} x {modality.n_vars}")
        lines += ["    " + line for line in _body_lines(modality)]
    return lines


def _body_lines(shadow: ShadowLike) -> list[str]:
    if not hasattr(shadow, "_KIND"):  # an AnnData given in memory as a MuData's modality (mod/<name>▲)
        return ["  (in memory▲)", *repr(shadow).splitlines()[1:]]
    return _mudata_lines(shadow) if shadow._KIND == "MuData" else _anndata_lines(shadow)


def text_repr(shadow: ShadowLike) -> str:
    """The repr of DESIGN.md section 1: header, then one line per non-empty slot with markers (ᐁ held in
    memory, ▲ assigned in memory); a MuData adds obsmap/varmap, ``mod:`` and each modality's block.
    """
    return "\n".join([_header(shadow), *_body_lines(shadow)])
