"""What a shadow holds in memory: materialized elements (ᐁ) and graphs kept with ``persist``.

Caching is persist: an element computed once is kept until :meth:`ElementCache.clear`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

CACHED = "ᐁ"
STAGED = "▲"


class ElementCache:
    """Values held in memory, keyed by element path relative to the AnnData root (``"obsm/X_pca"``)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computing and keeping it on first use."""
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` for ``key`` (a persisted graph, say)."""
        self._values[key] = value

    def discard(self, key: str) -> None:
        """Forget the value of ``key`` (if any)."""
        self._values.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Drop every held value so its memory can be freed."""
        self._values.clear()


def marker(cached: bool, staged: bool) -> str:
    """The repr marker of an element: ▲ for staged in memory, ᐁ for held in memory, else nothing."""
    return STAGED if staged else CACHED if cached else ""
