"""Registry of element readers keyed by (storage kind, encoding-type, encoding-version).

A reader is a class (an :class:`~shadows.elements.base.ElementSpec` subclass) with a ``from_node``
constructor. Supporting a new encoding version is one more registration, never another ``if`` branch.
Nodes written without encoding attributes (anndata < 0.7) are recognised by *sniffers*: predicates tried
in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shadows.backends import nodes
from shadows.errors import MalformedElementError, UnknownEncodingError, element_message, translated

if TYPE_CHECKING:
    from shadows.backends import FileRef
    from shadows.elements.base import ElementSpec

#: How deep elements may nest (path components below the file's root): anndata writes uns dicts as
#: deep as users nest them, a damaged or hostile file deeper than Python's recursion allows reading; past
#: this, describing an element is refused (reading 1,000 levels failed with a RecursionError, or took
#: minutes checking HDF5 links level by level).
MAX_DEPTH = 64

RegistryKey = tuple[str, str, str]
_READERS: dict[RegistryKey, type[ElementSpec]] = {}
_SNIFFERS: list[tuple[int, Callable[[Any, dict[str, Any]], bool], type[ElementSpec]]] = []


def register(storage: str, encoding_type: str, *versions: str):
    """Class decorator: register a reader for ``encoding_type`` at each of ``versions``.

    Parameters
    ----------
    storage
        ``"array"`` (an HDF5 dataset / Zarr array) or ``"group"``.
    encoding_type
        The ``encoding-type`` attribute anndata writes, e.g. ``"csr_matrix"``.
    versions
        The ``encoding-version`` values this reader understands.
    """

    def decorate(cls: type[ElementSpec]) -> type[ElementSpec]:
        for version in versions:
            _READERS[(storage, encoding_type, version)] = cls
        return cls

    return decorate


def register_sniffer(predicate: Callable[[Any, dict[str, Any]], bool], priority: int = 0):
    """Class decorator: use this reader for unencoded nodes for which ``predicate(node, attrs)`` holds.

    Sniffers are tried by increasing ``priority``; catch-alls (any group is a mapping) go last.
    """

    def decorate(cls: type[ElementSpec]) -> type[ElementSpec]:
        _SNIFFERS.append((priority, predicate, cls))
        _SNIFFERS.sort(key=lambda entry: entry[0])
        return cls

    return decorate


def registered() -> list[RegistryKey]:
    """Every registered (storage, encoding-type, encoding-version) key, sorted."""
    return sorted(_READERS)


def describe(ref: FileRef, node: Any, path: str) -> ElementSpec:
    """Describe the element stored at ``path`` from its metadata only (no array data is read).

    Parameters
    ----------
    ref
        The file the element lives in.
    node
        The opened HDF5/Zarr node at ``path``.
    path
        Absolute path of the element inside the file.

    Raises
    ------
    UnknownEncodingError
        The node names an encoding (or version) no reader is registered for, or carries none and no
        legacy layout matches.
    MalformedElementError
        The element is nested more than :data:`MAX_DEPTH` levels deep, or its metadata is inconsistent.
    UnreadableDataError
        Its metadata cannot be read (damaged HDF5 object headers, say).
    """
    if path.strip("/").count("/") >= MAX_DEPTH:
        what = f"nested more than {MAX_DEPTH} levels deep; shadows reads elements up to that depth"
        raise MalformedElementError(element_message(ref.display, path, what))
    with translated(ref.display, path):
        return _describe(ref, node, path)


def _describe(ref: FileRef, node: Any, path: str) -> ElementSpec:
    attrs = nodes.attrs(node)
    storage = nodes.storage_kind(node)
    encoding_type = attrs.get("encoding-type")
    if encoding_type is not None:
        version = str(attrs.get("encoding-version", ""))
        cls = _READERS.get((storage, str(encoding_type), version))
        if cls is None:
            known = sorted({v for (s, t, v) in _READERS if s == storage and t == encoding_type})
            hint = f" (this version of shadows reads versions {', '.join(known)})" if known else ""
            what = (
                f"unknown encoding-type '{encoding_type}' version '{version}' "
                f"stored as {'a group' if storage == 'group' else 'an array'}{hint}"
            )
            raise UnknownEncodingError(element_message(ref.path, path, what))
        return cls.from_node(ref, node, path, attrs)
    for _, predicate, cls in _SNIFFERS:
        if predicate(node, attrs):
            return cls.from_node(ref, node, path, attrs)
    what = f"no encoding-type attribute, and the {storage} matches no layout of older anndata releases"
    raise UnknownEncodingError(element_message(ref.path, path, what))
