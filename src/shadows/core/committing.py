"""Commit a shadow's changes (▲) to its own file: the checks, then one transaction per element.

What ``AnnDataShadow.write()`` / ``MuDataShadow.write()`` do without a file name (with one, they export:
:mod:`shadows.writing.export`). Each element is committed atomically by :mod:`shadows.writing.commit`; a
failed write leaves the file as it was and the shadow holding what it held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadows import progress as progress_bar
from shadows.cluster import writes_on_cluster
from shadows.errors import ReadOnlyError
from shadows.writing import commit, legacy_upgrade, transaction

if TYPE_CHECKING:
    from shadows.core.elements import ShadowElements

READ_ONLY_MESSAGE = (
    "File is open in read-only mode. Changes can't be pushed. Reopen it with .reopen('r+') to enable writing."
)


def commit_changes(shadow: ShadowElements, *, overwrite: bool, progress: bool) -> None:
    """Write the changes the elements of a shadow hold in memory into its file (see ``ShadowBase.write``).

    Raises
    ------
    ReadOnlyError
        ``shadow`` is a view, was subset in place, or its file is open read-only.
    """
    elements, columns = checked_changes(shadow, overwrite=overwrite)
    if elements or columns:
        before = shadow.connection.content
        try:
            with progress_bar.job(transaction.blocks_to_commit(elements, columns), progress,
                                  on_cluster=writes_on_cluster(shadow.ref.capabilities.workers_write,
                                                               reads=[shadow.ref.path])):
                commit(shadow.connection, elements, columns)
        except BaseException:
            shadow.connection.wrote()  # part of it may be in the file
            shadow.connection.recover()
            shadow.state.carry_over(before)  # what this shadow holds was not touched by its own write
            raise
        shadow.connection.wrote()  # other shadows of the file drop what they read before
        shadow.connection.open(shadow.connection.mode)  # read the new layout; drop handles to replaced nodes
        shadow.state.carry_over(before)


def checked_changes(shadow: ShadowElements, *, overwrite: bool, opened_for_writing: bool = True
                    ) -> tuple[list, list]:
    """The changes :func:`commit_changes` would commit (elements, then obs/var columns), after every check
    it makes before writing anything: nothing is written. ``opened_for_writing=False``: the checks of the
    changes against the file alone, on a shadow opened ``"r"`` (whether the file can be opened for
    writing is then the caller's to check).

    Raises
    ------
    ReadOnlyError
        ``shadow`` is a view, was subset in place, or its file is open read-only.
    ShadowsError
        What would go wrong (an element that exists without ``overwrite``, a value that does not fit...).
    """
    if shadow.is_view:
        msg = (f"{shadow.filename}: a view cannot be written to its file; write the shadow it was taken "
               "from, or export the view with .write_h5ad() / .write_zarr()")
        raise ReadOnlyError(msg)
    if shadow.view is not None:
        n_obs, n_vars = shadow.shape
        msg = (f"{shadow.filename}: this shadow was subset in place ({n_obs} × {n_vars} of the file's "
               f"{shadow.layout.n_obs} × {shadow.layout.n_vars}); its elements no longer fit the file. Export "
               "it with .write_h5ad() / .write_zarr()")
        raise ReadOnlyError(msg)
    if opened_for_writing and shadow.connection.mode == "r":
        raise ReadOnlyError(f"{shadow.filename}: {READ_ONLY_MESSAGE}")
    shadow.state.keep_changed_in_place()  # an array changed in place since it was read is written too
    elements, columns = shadow.staged_changes()
    transaction.check(shadow.connection, shadow.filename, elements, columns, overwrite)
    # pre-0.7 slots written into move to today's encoding, checked before anything is written too
    return legacy_upgrade.fold(shadow.connection, shadow.filename, elements, columns, overwrite,
                               forget=shadow.state.forget)
