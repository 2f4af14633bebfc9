"""Keeping reads inside the file: what shadows refuses to follow out of an HDF5 file or a Zarr store.

Policy
------
A shadow reads the bytes of the file (or store) it was opened on, and nothing else, unless it was opened
with ``allow_external=True``. Refused, with :class:`~shadows.errors.ExternalDataError` naming the file and
the element:

- HDF5 **external links** (``h5py.ExternalLink``): an element, or a group on the way to it, or a link
  anywhere inside a group element (a sparse matrix's ``data``, a dataframe column), that points into
  another file;
- HDF5 **external storage**: a dataset whose raw bytes live in other files
  (``create_dataset(..., external=[...])``);
- HDF5 **virtual datasets** with a source in another file (a source in the same file, ``"."`` or the
  file's own path, is fine);
- in a local **Zarr store**, a symbolic link (the element's folder, a folder on the way to it, or any file
  or folder inside an array's folder: chunks too) that resolves outside the store's real path. Links
  that stay inside the store are fine, and so is the store root itself being a link (``link.zarr``).

anndata (``read_h5ad``/``read_zarr``) and h5py/zarr follow all of these silently: a file received from
someone else could make a program read, and then pass on, any file its user can read. Trusted files that
use them on purpose open with ``allow_external=True``, which turns every check here off.

Where the checks run
--------------------
Checks read metadata only (link types, dataset creation properties, directory listings), never data.

- :class:`~shadows.core.layout.Layout` checks each element once, when it first describes it: the lookup
  path (HDF5 links are checked *before* h5py follows them, so the other file is never opened), that the
  node lies in the file, a dataset's storage, and every link under a group element. Elements are
  described when first accessed, so a refused element fails on access, with every array backend (the
  dask backend too, before any graph is built). Zarr folders are checked here too (a few ``lstat``).
- :meth:`~shadows.backends.FileRef.node`, through which every read of stored values goes (in the
  user's process and in dask workers alike), checks each node once per process and open handle before
  returning it: the same checks for HDF5 (so datasets inside group elements are covered), and for a
  Zarr array the listing of its folder, chunk files included (``os.scandir``, recursively: one call per
  folder). This is the gate that holds whatever path a read takes.

Remote stores (fsspec URLs) have no symbolic links; an HDF5 file behind a URL is checked like a local
one (its external links would otherwise point at files on the reading machine).
"""

from __future__ import annotations

import os
import stat
import weakref
from typing import Any

from shadows.backends import nodes
from shadows.backends.handles import read_handle, read_node
from shadows.errors import ExternalDataError, MalformedElementError, ShadowsError, element_message

#: Virtual datasets whose sources are virtual datasets again: how deep sources are followed.
_MAX_DEPTH = 8
#: How many levels below a group element its links are walked (anndata's group elements hold arrays one
#: or two levels down; uns dicts nest deeper, but each of their levels is an element checked on its own).
MAX_WALK_DEPTH = 64
_HINT = ("shadows does not read data from outside the file unless asked: open it with allow_external=True "
         "if you trust where it points")

#: Per (file, format, node path): the node object checked last (a weak reference: this cache keeps no
#: node, and so no file, alive).
_checked: dict[tuple[str, str, str], weakref.ref] = {}
_real_roots: dict[str, str] = {}


def refuse(ref: Any, element: str, what: str) -> ExternalDataError:
    """The error for ``element`` (absolute in the file) of the file of ``ref``: ``what`` it points at, and
    how to opt in. The element is named relative to the AnnData (``ref.display`` names a modality).
    """
    root = ref.root.strip("/")
    element = element.strip("/")
    if root and element.startswith(root + "/"):
        element = element[len(root) + 1:]
    error = ExternalDataError(element_message(ref.display, element, f"{what}; {_HINT}"))
    error.what = what  # what was found, for an error about an element that leads to this one
    return error


def _is_url(path: str) -> bool:
    from shadows.backends.remote import is_url

    return is_url(path)


# -- HDF5 ------------------------------------------------------------------------------------------


def check_hdf5_links(ref: Any, handle: Any, path: str, depth: int = 0) -> None:
    """Refuse an external link on the way to ``path`` (absolute in the file) before h5py follows one.

    Each component's link is inspected (``H5Lget_info``, metadata): an external link is refused, a soft
    link's target path is checked the same way. A missing component ends the check (the lookup itself
    then reports the element as missing).
    """
    from h5py import h5l

    links = handle.id.links
    so_far = ""
    for part in (p for p in path.split("/") if p):
        so_far = f"{so_far}/{part}" if so_far else part
        name = so_far.encode()
        try:
            info = links.get_info(name)
        except (KeyError, RuntimeError, ValueError):
            return
        if info.type == h5l.TYPE_EXTERNAL:
            filename, target = (v.decode(errors="replace") for v in links.get_val(name))
            where = f"'{so_far}'" if so_far != path.strip("/") else "it"
            raise refuse(ref, path, f"{where} is an HDF5 external link to '{target}' in '{filename}', "
                                    "outside this file")
        if info.type == h5l.TYPE_SOFT and depth < _MAX_DEPTH:
            target = links.get_val(name).decode(errors="replace")
            if not target.startswith("/"):
                parent = so_far.rpartition("/")[0]
                target = f"{parent}/{target}" if parent else target
            try:
                check_hdf5_links(ref, handle, target, depth + 1)
            except ExternalDataError:
                raise refuse(ref, path, f"'{so_far}' is a soft link to '{target}', which leads out of this "
                                        "file through an HDF5 external link") from None


def _same_hdf5_file(ref: Any, filename: str) -> bool:
    """Whether a virtual dataset's source file name names the file itself."""
    if filename == ".":
        return True
    if _is_url(ref.path) or os.environ.get("HDF5_VDS_PREFIX"):
        return False
    candidate = filename if os.path.isabs(filename) else os.path.join(os.path.dirname(ref.path), filename)
    return os.path.realpath(candidate) == os.path.realpath(ref.path)


def check_hdf5_dataset(ref: Any, handle: Any, dataset: Any, path: str, depth: int = 0) -> None:
    """Refuse a dataset whose bytes lie in other files: external storage, or virtual sources elsewhere.

    Virtual sources in the same file are checked in turn (they may be virtual or external themselves).
    """
    from h5py import h5d

    dcpl = dataset.id.get_create_plist()
    if dcpl.get_external_count() > 0:
        names = sorted({dcpl.get_external(i)[0].decode(errors="replace") for i in range(dcpl.get_external_count())})
        raise refuse(ref, path, f"its bytes are stored in external file(s) {', '.join(map(repr, names))}, "
                                "outside this file (HDF5 external storage)")
    if dcpl.get_layout() != h5d.VIRTUAL:
        return
    for i in range(dcpl.get_virtual_count()):
        filename = dcpl.get_virtual_filename(i)
        source = dcpl.get_virtual_dsetname(i)
        if not _same_hdf5_file(ref, filename):
            raise refuse(ref, path, f"it is an HDF5 virtual dataset whose source '{source}' lies in "
                                    f"'{filename}', outside this file")
        if depth >= _MAX_DEPTH:
            raise refuse(ref, path, f"it is an HDF5 virtual dataset whose sources nest more than {_MAX_DEPTH} "
                                    "deep (not followed)")
        try:
            check_hdf5_links(ref, handle, source)
            try:
                inner = handle[source]
            except (KeyError, RuntimeError, ValueError, OSError):
                continue  # a missing source reads as the fill value: nothing outside is read
            check_hdf5_node(ref, handle, inner, source, depth + 1)
        except ExternalDataError as error:
            what = getattr(error, "what", str(error))
            raise refuse(ref, path, f"it is an HDF5 virtual dataset over '{source}' in this file, which leads "
                                    f"out of it ({what})") from None


def _holds_elements(group: Any) -> bool:
    """Whether a group is a mapping of elements (a dict, raw, an unencoded uns dict) rather than one
    element stored as a group (a sparse matrix, a dataframe, a categorical...). A mapping's children are
    elements of their own, each checked when it is accessed or read: one bad entry does not make the
    others unreadable.
    """
    encoding = nodes.attrs(group).get("encoding-type")
    if encoding is None:
        return "h5sparse_format" not in group.attrs
    return encoding in ("dict", "raw")


def _links_below(group: Any) -> tuple[list[tuple[str, int]], bool]:
    """The soft and external links at any depth under ``group`` (name relative to it, link type), and
    whether the walk stopped at :data:`MAX_WALK_DEPTH` levels with more below.

    HDF5's ``H5Lvisit`` recurses in C once per level: a tree of 10,000 nested groups overflowed the
    stack (a segmentation fault, nothing Python can catch). Returning a value from the callback stops
    the visit, so it never goes more than ``MAX_WALK_DEPTH`` levels down.
    """
    from h5py import h5l

    found: list[tuple[str, int]] = []

    def visit(name: bytes, info: Any) -> int | None:
        if name.count(b"/") >= MAX_WALK_DEPTH:
            return 1  # deeper than any element anndata writes: stop before the C stack runs out
        if info.type in (h5l.TYPE_EXTERNAL, h5l.TYPE_SOFT):
            found.append((name.decode(errors="replace"), info.type))
        return None

    return found, group.id.links.visit(visit, info=True) is not None


def check_hdf5_node(ref: Any, handle: Any, node: Any, path: str, depth: int = 0, walk: bool = False) -> None:
    """Refuse a node (looked up already) that is not in the file of ``handle`` (a link led elsewhere), a
    dataset whose bytes lie elsewhere, and, with ``walk``, a group element (not a mapping of elements)
    holding an external link at any depth, or a soft link leading out through one.
    """
    import h5py
    from h5py import h5l

    if node.id.fileno != handle.id.fileno:
        raise refuse(ref, path, f"it lies in '{node.file.filename}', outside this file (reached through an "
                                "HDF5 external link)")
    if isinstance(node, h5py.Dataset):
        check_hdf5_dataset(ref, handle, node, path, depth)
        return
    if not walk:
        return
    found, too_deep = _links_below(node)
    if (not found and not too_deep) or _holds_elements(node):  # (attributes are read only when needed)
        return  # a mapping's children are elements of their own: each is checked (and its depth) when used
    if too_deep:
        what = (f"its groups nest more than {MAX_WALK_DEPTH} levels deep (a group element holds arrays a "
                "level or two below it): damaged or not written by anndata")
        raise MalformedElementError(element_message(ref.display, path, what))
    base = node.name.strip("/")
    for name, kind in found:
        inner = f"{base}/{name}" if base else name
        if kind == h5l.TYPE_EXTERNAL:
            filename, target = (v.decode(errors="replace") for v in node.id.links.get_val(name.encode()))
            raise refuse(ref, path, f"'{inner}' inside it is an HDF5 external link to '{target}' in "
                                    f"'{filename}', outside this file")
        check_hdf5_links(ref, handle, inner)


# -- Zarr (local stores) ---------------------------------------------------------------------------


def _real_root(root: str) -> str:
    real = _real_roots.get(root)
    if real is None:
        real = _real_roots[root] = os.path.realpath(root)
    return real


def _inside(target: str, real_root: str) -> bool:
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def check_zarr_path(ref: Any, path: str) -> None:
    """Refuse a symbolic link on the way to ``path`` (the element's folder and the folders above it, up to
    the store root) that resolves outside the store. One ``lstat`` per path component.
    """
    if _is_url(ref.path):
        return
    real_root = None
    current = ref.path
    for part in (p for p in path.split("/") if p):
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return
        if stat.S_ISLNK(mode):
            real_root = real_root or _real_root(ref.path)
            target = os.path.realpath(current)
            if not _inside(target, real_root):
                rel = os.path.relpath(current, ref.path)
                where = "its folder" if rel == path.strip("/") else f"'{rel}'"
                raise refuse(ref, path, f"{where} is a symbolic link to '{target}', outside the Zarr store")


def check_zarr_array(ref: Any, path: str) -> None:
    """Refuse an array whose folder holds (at any depth: chunk files, ``c/`` folders) a symbolic link
    resolving outside the store. Links staying inside are followed and their targets listed too.
    """
    if _is_url(ref.path):
        return
    real_root = _real_root(ref.path)
    start = os.path.realpath(os.path.join(ref.path, path))
    seen = {start}
    pending = [start]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not _inside(target, real_root):
                    rel = os.path.relpath(entry.path, start)
                    raise refuse(ref, path, f"'{rel}' inside it is a symbolic link to '{target}', outside "
                                            "the Zarr store")
                if target not in seen and os.path.isdir(target):
                    seen.add(target)
                    pending.append(target)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)


# -- the two entry points --------------------------------------------------------------------------


def check_lookup(ref: Any, handle: Any, path: str) -> None:
    """Before looking ``path`` up (absolute in the file): no external link / outward symlink on the way."""
    if ref.format == "hdf5":
        check_hdf5_links(ref, handle, path)
    else:
        check_zarr_path(ref, path)


def check_node(ref: Any, handle: Any, node: Any, path: str, walk: bool = False) -> None:
    """Once a node is looked up (by a shadow's layout, before describing it): refuse an HDF5 node that
    lies in another file, whose bytes do, or (``walk``) a group element holding an external link
    (:func:`check_hdf5_node`). Nothing for Zarr: its folders are checked on the way to the node
    (:func:`check_lookup`) and an array's when it is read (:func:`contained_node`).
    """
    if ref.format == "hdf5":
        check_hdf5_node(ref, handle, node, path, walk=walk)


def contained_node(ref: Any, path: str) -> Any:
    """The node at ``path`` through this process's read handle, checked before it is first returned.

    A node is checked once per process and lookup: the cache remembers (weakly) the node object it
    checked, and a lookup in a handle opened anew (after a write, in a forked or spawned worker) returns
    another object, checked again. A checked node costs a dictionary lookup and a weak reference.
    """
    try:
        return _contained_node(ref, path)
    except ShadowsError:
        raise
    except Exception as error:
        raise lookup_error(ref, path, error) from error


def lookup_error(ref: Any, path: str, error: Exception) -> Exception:
    """The shadows error for a failed lookup of ``path``: h5py's KeyError says both "no such object" and
    "its object header is damaged" (``Unable to synchronously open object (bad object header ...)``);
    zarr raises its own errors for metadata it cannot parse.
    """
    from shadows.errors import MissingElementError, UnreadableDataError, as_shadows_error

    text = str(error)
    if isinstance(error, KeyError) and "Unable to" in text and "doesn't exist" not in text:
        what = f"cannot read its metadata (damaged object header?): {text}"
        return UnreadableDataError(element_message(ref.display, path, what))
    if isinstance(error, KeyError):
        return MissingElementError(element_message(ref.display, path, f"not in the file ({text})"))
    return as_shadows_error(error, ref.display, path)


def _contained_node(ref: Any, path: str) -> Any:
    key = (ref.path, ref.format, path)
    known = _checked.get(key)
    if known is not None:
        node = read_node(ref, path)
        if known() is node:
            return node
    handle = read_handle(ref, path)
    check_lookup(ref, handle, path)
    node = read_node(ref, path)
    if ref.format == "hdf5":
        check_hdf5_node(ref, handle, node, path)
    elif not nodes.is_group(node):
        check_zarr_array(ref, path)
    _checked[key] = weakref.ref(node)
    return node
