"""Element readers: one module per stored encoding, found through :mod:`shadows.elements.registry`.

Importing this package registers every reader.
"""

from shadows.elements import (  # noqa: F401  (imported for their registrations)
    awkward,
    categorical,
    dataframe,
    dense,
    legacy,
    mapping,
    nullable,
    scalars,
    sparse,
)
from shadows.elements.base import ElementSpec
from shadows.elements.registry import describe

__all__ = ["ElementSpec", "describe"]
