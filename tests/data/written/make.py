"""Write this folder's files with the installed anndata and mudata: ``python tests/data/written/make.py``.

Each stack the project supports (anndata 0.12 with zarr 3.1 and mudata 0.3; anndata 0.13 with zarr 3.4
and mudata 0.4) writes the encodings matrix of ``tests/test_encodings.py`` and a MuData into
``anndata-<version>/``; Zarr stores are zipped (as anndata ships its archives). ``tests/test_encodings.py``
reads every stack's files on every stack, against the installed anndata's and mudata's own reads.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: the writers of the test modules


def _zip_store(store: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in store.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(store).as_posix())


def main() -> None:
    from importlib.metadata import version

    from test_encodings import VARIANTS, write_variant
    from test_mudata import make_mudata, write_mudata

    out = HERE / f"anndata-{version('anndata')}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(scratch)
        written = [write_variant(variant, folder) for variant in VARIANTS]
        written += [write_mudata(make_mudata("shared_obs"), folder / f"mudata_{fmt}{suffix}", fmt)
                    for fmt, suffix in (("h5mu", ".h5mu"), ("zarr3", ".zarr"))]
        for path in written:
            if path.is_dir():
                _zip_store(path, out / f"{path.name}.zip")
            else:
                shutil.copy(path, out / path.name)
    packages = ("anndata", "mudata", "zarr", "h5py")
    packages = ("anndata", "mudata", "zarr", "h5py")
    (out / "VERSIONS").write_text("".join(f"{name} {version(name)}\n" for name in packages))


if __name__ == "__main__":
    main()
