"""Views: user keys → per-axis positions, composition of views of views, and selection pushdown."""

from shadows.indexing.compose import compose
from shadows.indexing.keys import AxisIndex, normalize_key

__all__ = ["AxisIndex", "compose", "normalize_key"]
