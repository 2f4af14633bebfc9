"""Exceptions raised by shadows.

Every error derives from :class:`ShadowsError` *and* from the builtin exception a user would naturally
catch (a missing file is a :class:`FileNotFoundError`, a missing element a :class:`KeyError`, ...), so
``except FileNotFoundError`` and ``except ShadowsError`` both work. Messages name the file and the element.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ShadowsError(Exception):
    """Base class of every error raised by shadows."""


class ShadowsFileNotFoundError(ShadowsError, FileNotFoundError):
    """The path given to a shadow does not exist."""


class NotAnnDataError(ShadowsError, ValueError):
    """The file exists but is not an HDF5/Zarr AnnData (or MuData) container."""


class NotMuDataError(NotAnnDataError):
    """The file is not a MuData container (an AnnData, say, opened with MuDataShadow)."""


class UnknownEncodingError(ShadowsError, ValueError):
    """An element carries an encoding-type/version no reader is registered for."""


class MalformedElementError(ShadowsError, ValueError):
    """An element is stored, but its parts are missing or inconsistent."""


class UnreadableDataError(ShadowsError, OSError):
    """Stored bytes cannot be read back: a truncated file, a corrupted chunk, a failing disk."""


class WriteFailedError(ShadowsError, OSError):
    """Storage refused a write (disk full, file size limit, I/O error); nothing of the element is visible."""


class ElementExistsError(ShadowsError, FileExistsError):
    """Writing would replace or delete elements the file stores, and ``overwrite=True`` was not given."""


class MissingElementError(ShadowsError, KeyError):
    """A requested element or key is not in the file."""

    def __str__(self) -> str:
        # KeyError quotes its argument with repr(); show the message as written instead.
        return str(self.args[0]) if self.args else ""


class ShapeError(ShadowsError, ValueError):
    """A value assigned to a shadow does not fit its shape (or its number of names), as anndata's
    ``ValueError`` in the same place: ``obsm["x"]`` with other leading dimensions, ``X`` of another
    shape, ``obs_names``, an obs column or ``obs`` of another length. Raised on assignment, before
    anything is staged; the message names the file and the element.
    """


class InvalidKeyError(ShadowsError, IndexError):
    """A key used to subset a shadow is out of range or malformed."""


class UnknownNameError(ShadowsError, KeyError):
    """A key used to subset a shadow names observations or variables that do not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(ShadowsError, ImportError):
    """The package needed by the requested array/table backend is not installed."""


class UnknownBackendError(ShadowsError, ValueError):
    """The requested array/table backend name is not one shadows knows."""


class ReadOnlyError(ShadowsError, OSError):
    """A change was asked of a file that is open read-only, or of a stored element."""


class FileBusyError(ShadowsError, OSError):
    """The file cannot be opened in the requested mode because it is open elsewhere."""


class PermissionDeniedError(ShadowsError, PermissionError):
    """The operating system refuses access (opening ``'r+'`` a file or store this user cannot write)."""


class InvalidElementKeyError(ShadowsError, ValueError):
    """A key given to a slot (``obsm["a/b"]``, ``uns["."]``, an obs column with a NUL) is not a valid
    element name; raised on assignment, before anything is staged.
    """


class UnsafeTargetError(ShadowsError, ValueError):
    """A write or export would leave the store (a symlink), replace its own source, or replace something
    that is not a store it may replace.
    """


class ExternalDataError(ShadowsError, PermissionError):
    """An element's bytes lie outside the file (HDF5 external links, external storage, virtual datasets;
    symlinks leaving a Zarr store) and following them was not allowed (``allow_external=True``).
    """


class UnwritableValueError(ShadowsError, TypeError):
    """A value assigned in memory cannot be stored in the file's format (anndata has no encoding for its
    type or dtype); raised by ``write()`` before anything is written, naming every such element.
    """


class TooLargeError(ShadowsError, MemoryError):
    """An element (or a view's part of it) would need more memory than the machine has."""


def element_message(filename: str, element: str, what: str) -> str:
    """Format an error message that names the file and the element.

    Parameters
    ----------
    filename
        The file (or store) the element lives in.
    element
        The element path inside the file, e.g. ``X/indptr``.
    what
        What is wrong.
    """
    element = element.strip("/") or "/"
    return f"{filename}: element '{element}': {what}"


#: Library errors that say the stored bytes could not be read (h5py's and the codecs' failures), as
#: opposed to bytes read but describing something inconsistent.
_UNREADABLE = (OSError, RuntimeError)


def as_shadows_error(error: Exception, filename: str, element: str) -> ShadowsError:
    """The shadows error for a library's ``error`` raised while reading ``element`` of ``filename``.

    Reading a damaged file makes h5py, zarr, its codecs, numpy, pandas or anndata fail in their own
    words; a shadow answers with the error family of this module, naming the file and the element, and
    the library's error chained as the cause. Bytes that cannot be read (h5py's and the codecs' errors:
    :class:`OSError`, :class:`RuntimeError`) give :class:`UnreadableDataError`; a memory error
    :class:`TooLargeError`; a structure too deep to walk (:class:`RecursionError`) and every other error
    (bytes read but inconsistent: a dtype, a shape, a length, a key) :class:`MalformedElementError`.

    Parameters
    ----------
    error
        What the library raised (a :class:`ShadowsError` is returned as it is).
    filename
        The file (or store) being read.
    element
        The element being read, e.g. ``obs/cell_type``.
    """
    if isinstance(error, ShadowsError):
        return error
    detail = f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError):
        return TooLargeError(element_message(filename, element, f"reading it ran out of memory ({detail})"))
    if isinstance(error, RecursionError):
        return MalformedElementError(element_message(filename, element, "nested too deeply to read"))
    if isinstance(error, _UNREADABLE):
        what = f"cannot read its stored bytes (truncated file, damaged metadata or corrupted chunk?): {detail}"
        return UnreadableDataError(element_message(filename, element, what))
    return MalformedElementError(element_message(filename, element, f"its stored parts are inconsistent: {detail}"))


@contextmanager
def translated(filename: str, element: str) -> Iterator[None]:
    """Context manager: an error raised inside becomes :func:`as_shadows_error` of it (the library's error
    chained as the cause); a :class:`ShadowsError` passes unchanged.

    Parameters
    ----------
    filename
        The file (or store) being read.
    element
        The element being read.
    """
    try:
        yield
    except ShadowsError:
        raise
    except Exception as error:
        raise as_shadows_error(error, filename, element) from error
