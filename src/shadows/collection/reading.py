"""Reading one source of an atlas inside a graph task: the source checked unchanged, then its element
described (once per process) by the element registry, as a one-file shadow describes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from shadows.backends import FileRef
from shadows.backends.handles import reading
from shadows.collection.catalog import SourceMeta
from shadows.collection.sources import check_unchanged, stamped
from shadows.elements.registry import describe


@dataclass(frozen=True)
class SourceKey:
    """What a graph task needs to find one source again: its reference and catalogued identity (light
    to pickle, unlike its whole catalog entry).
    """

    ref: FileRef
    identity: list[Any]




def source_element(source: SourceMeta | SourceKey, rel: str) -> Any:
    """The element ``rel`` of ``source`` (its :class:`~shadows.elements.ElementSpec`), after checking the
    source is what the catalog describes (:class:`~shadows.collection.sources.SourceChangedError` if not).
    """
    check(source)
    return _described(stamped(source.ref, source.identity), rel)


def check(source: SourceMeta | SourceKey) -> None:
    """Raise unless ``source`` is unchanged since it was catalogued (a ``stat``; a request once per
    process for a URL).
    """
    check_unchanged(source.ref, source.identity)


@functools.lru_cache(maxsize=8192)
def _described(ref: FileRef, rel: str) -> Any:
    """The element's spec, described once per process (keyed by the stamped ref: a refreshed source's
    is described again).
    """
    path = ref.element_path(rel)
    with reading(ref):  # the handle stays open under the lookup, should a shadow of the file go meanwhile
        return describe(ref, ref.node(path), path)
