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
    from shadows.core.interface import ShadowLike

READ_ONLY_MESSAGE = (
    "File is open in read-only mode. Changes can't be pushed. Reopen it with .reopen('r+') to enable writing."
)


def commit_changes(shadow: ShadowLike, *, overwrite: bool, progress: bool) -> None:
    """Write the changes ``shadow`` holds in memory into its file (see ``ShadowBase.write``).

    Raises
    ------
    ReadOnlyError
        ``shadow`` is a view, was subset in place, or its file is open read-only.
    """
    if shadow.is_view:
        msg = (f"{shadow.filename}: a view cannot be written to its file; write the shadow it was taken "
               "from, or export the view with .write_h5ad() / .write_zarr()")
        raise ReadOnlyError(msg)
    if shadow._view is not None:
        msg = (f"{shadow.filename}: this shadow was subset in place ({shadow.n_obs} × {shadow.n_vars} of the file's "
               f"{shadow._layout.n_obs} × {shadow._layout.n_vars}); its elements no longer fit the file. Export "
               "it with .write_h5ad() / .write_zarr()")
        raise ReadOnlyError(msg)
    if shadow._mode == "r":
        raise ReadOnlyError(f"{shadow.filename}: {READ_ONLY_MESSAGE}")
    shadow._state.keep_changed_in_place()  # an array changed in place since it was read is written too
    elements, columns = shadow._staged_changes()
    transaction.check(shadow._conn, shadow.filename, elements, columns, overwrite)
    # pre-0.7 slots written into move to today's encoding, checked before anything is written too
    elements, columns = legacy_upgrade.fold(shadow._conn, shadow.filename, elements, columns, overwrite,
                                            forget=shadow._state.forget)
    if elements or columns:
        before = shadow._conn.content
        try:
            with progress_bar.job(transaction.blocks_to_commit(elements, columns), progress,
                                  on_cluster=writes_on_cluster(shadow._ref.capabilities.workers_write,
                                                               reads=[shadow._ref.path])):
                commit(shadow._conn, elements, columns)
        except BaseException:
            shadow._conn.wrote()  # part of it may be in the file
            shadow._conn.recover()
            shadow._state.carry_over(before)  # what this shadow holds was not touched by its own write
            raise
        shadow._conn.wrote()  # other shadows of the file drop what they read before
        shadow._conn.open(shadow._conn.mode)  # read the new layout; drop handles to replaced nodes
        shadow._state.carry_over(before)
