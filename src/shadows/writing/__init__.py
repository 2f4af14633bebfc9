"""The write side: staged elements streamed to the file and committed atomically (DESIGN.md section 5)."""

from shadows.writing.commit import DELETED, ColumnChange, ElementChange, GroupAttributes
from shadows.writing.transaction import commit

__all__ = ["DELETED", "ColumnChange", "ElementChange", "GroupAttributes", "commit"]
