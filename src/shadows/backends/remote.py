"""Files and stores behind fsspec URLs (``s3://``, ``gs://``, ``http(s)://``, any fsspec protocol).

Zarr stores are read through zarr's ``FsspecStore``; HDF5 files through an fsspec file object that h5py
reads with ranged requests (nothing is downloaded whole). Every function takes the URL and the
``storage_options`` fsspec's filesystems take (credentials, endpoints); those are never put in messages.
"""

from __future__ import annotations

import gc
import io
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: HDF5 over the network: bytes fetched past each read. h5py reads metadata in many small pieces, which
#: this read-ahead serves from one request; large reads (rows of X) are fetched as asked, so a view still
#: fetches only about its share of the file.
HDF5_BLOCK_SIZE = 16 * 2**10
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an fsspec URL of a remote filesystem (``file://`` counts as local)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def redact(url: str) -> str:
    """The URL without user and password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path it uses for it."""
    import fsspec

    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


class NetworkError(OSError):
    """Raised by :func:`network_errors` for a request that failed (not a missing object)."""


@contextmanager
def network_errors(url: str, element: str = "") -> Iterator[None]:
    """Turn fsspec's and the transport's errors into shadows errors naming the URL and the element."""
    from shadows.errors import ShadowsError, ShadowsFileNotFoundError, UnreadableDataError, element_message

    try:
        yield
    except ShadowsError:
        raise
    except FileNotFoundError as error:
        raise ShadowsFileNotFoundError(element_message(redact(url), element, f"no such object: {error}")) from error
    except (OSError, TimeoutError, ConnectionError) as error:
        what = f"the request failed ({type(error).__name__}: {error})"
        raise UnreadableDataError(element_message(redact(url), element, what)) from error
    except Exception as error:
        if is_transport_error(error):
            what = f"the request failed ({type(error).__name__}: {error})"
            raise UnreadableDataError(element_message(redact(url), element, what)) from error
        raise


#: Packages whose exceptions mean a request failed (HTTP status, connection, credentials).
_TRANSPORTS = ("aiohttp", "botocore", "aiobotocore", "requests", "gcsfs", "google")


def is_transport_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the network layer under fsspec (an HTTP or object-store client)."""
    return type(error).__module__.split(".")[0] in _TRANSPORTS


def read_bytes(url: str, storage_options: Mapping[str, Any] | None, start: int | None = None,
               end: int | None = None) -> bytes | None:
    """The bytes of the object at ``url`` (or a range of them), or ``None`` when there is no such object."""
    fs, path = filesystem(url, storage_options)
    try:
        return fs.cat_file(path, start=start, end=end)
    except FileNotFoundError:
        return None


def list_directories(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """Names of the "directories" (common prefixes) right below ``url``."""
    fs, path = filesystem(url, storage_options)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if entry.get("type") == "directory":
            names.append(entry["name"].rstrip("/").rsplit("/", 1)[-1])
    return sorted(set(names))


def sniff_format(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """``"zarr"`` when ``url`` holds Zarr root metadata, ``"hdf5"`` when it starts with HDF5's signature."""
    for marker in ("zarr.json", ".zgroup", ".zmetadata"):
        if read_bytes(f"{url.rstrip('/')}/{marker}", storage_options) is not None:
            return "zarr"
    head = read_bytes(url, storage_options, 0, len(HDF5_SIGNATURE))
    if head is not None and head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    return None


def exists(url: str, storage_options: Mapping[str, Any] | None) -> bool:
    """Whether an object or a prefix exists at ``url``.

    Asks for its description (a HEAD request over HTTP): fsspec's ``exists`` over HTTP starts a GET of
    the whole object.
    """
    fs, path = filesystem(url, storage_options)
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True


def open_hdf5(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    """An h5py.File reading ``url`` through ranged requests."""
    import h5py

    fs, path = filesystem(url, storage_options)
    handle = fs.open(path, "rb", block_size=HDF5_BLOCK_SIZE, cache_type="readahead")
    return h5py.File(_CollectionFreeReads(handle, redact(url)), "r")


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's garbage collector paused for the duration, in every thread; pauses nest and overlap
    across threads (collection resumes when the last ends, if it was enabled before the first).

    h5py holds its global lock through each of its calls, and fsspec serves a file object's reads on its
    event-loop thread. Should a collection start on that thread while another thread is inside an h5py
    call and free an h5py object (which needs the same lock), both wait for each other forever (h5py
    issue 2019): remote HDF5 reads run inside this pause, each from before h5py takes its lock (see
    :func:`shadows.backends.registry.reading`) to after it lets go.
    """
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


class _CollectionFreeReads(io.RawIOBase):
    """A file object for h5py whose reads run with Python's garbage collector paused
    (:func:`collection_paused`: the read of an element pauses it from before h5py's call; this covers the
    reads made outside one, opening the file and reading its metadata).

    h5py names a file opened from a file object by that object's repr (``File.filename``): the repr is
    the URL, so messages name it.
    """

    def __init__(self, raw: Any, url: str):
        super().__init__()
        self.raw = raw
        self.url = url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer: Any) -> int:
        with collection_paused():
            return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()

    def __repr__(self) -> str:
        return self.url


def zarr_store(url: str, storage_options: Mapping[str, Any] | None, read_only: bool) -> Any:
    """The zarr store (``FsspecStore``) for the Zarr hierarchy at ``url``."""
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def supports_writes(url: str, storage_options: Mapping[str, Any] | None) -> bool:
    """Whether the filesystem behind ``url`` accepts writes (object stores do; HTTP does not)."""
    fs, _ = filesystem(url, storage_options)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return not set(protocols) & {"http", "https"}
