"""Text repr of shadows, built from metadata only (printing a shadow reads no data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadows.cache import marker

if TYPE_CHECKING:
    from shadows.core.anndata import AnnDataShadow


def _frame_line(shadow: AnnDataShadow, slot: str) -> str:
    spec = getattr(shadow._layout, slot)
    cached = shadow._is_cached(slot)
    names = [spec.index_key, *spec.columns]
    return f"  {slot}:\t" + ", ".join(n + marker(cached, False) for n in names)


def text_repr(shadow: AnnDataShadow) -> str:
    """The repr of DESIGN.md section 1: header, then one line per non-empty slot with markers."""
    header = f"AnnData Shadow object with n_obs × n_vars = {shadow.n_obs} × {shadow.n_vars}"
    if shadow.is_view:
        layout = shadow._layout
        header = f"View of {header} (original {layout.n_obs} × {layout.n_vars})"
    lines = [header]
    if shadow._layout.has("X"):
        lines.append("  X" + marker(shadow._is_cached("X"), False))
    if len(shadow.layers):
        lines.append(f"  {shadow.layers!r}")
    lines.append(_frame_line(shadow, "obs"))
    lines.append(_frame_line(shadow, "var"))
    for slot in ("obsm", "varm", "obsp", "varp", "uns"):
        mapping = shadow._slots[slot]
        if len(mapping):
            lines.append(f"  {mapping!r}")
    if shadow.raw is not None:
        parts = [p for p in ("X", "var", "varm") if shadow._layout.has(f"raw/{p}")]
        lines.append("  raw:\t" + ", ".join(p + marker(shadow._is_cached(f"raw/{p}"), False) for p in parts))
    return "\n".join(lines)
