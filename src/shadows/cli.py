"""Command line: ``shadows info PATH`` prints what a file holds without loading it; ``shadows demo`` walks
through the main job on a generated dataset.
"""

from __future__ import annotations

import argparse
import sys


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _dtype_text(dtype) -> str:
    if dtype is None:
        return "-"
    names = getattr(dtype, "names", None)
    if names:  # a structured dtype: its field list is long and says little here
        return f"structured ({len(names)} fields)"
    return str(dtype)


def open_shadow(path: str, format: str | None = None, allow_external: bool = False):
    """An AnnDataShadow, or a MuDataShadow when the file is a MuData (:func:`shadows.read`)."""
    from shadows.io import read

    return read(path, format=format, allow_external=allow_external)


def info_text(path: str, format: str | None = None, allow_external: bool = False) -> str:
    """The repr plus a table of every element's shape, dtype, encoding, chunking and size on disk."""
    shadow = open_shadow(path, format, allow_external)
    rows = [("element", "shape", "dtype", "encoding", "chunks", "on disk")]
    for element in shadow.stored_elements():
        shape = " × ".join(map(str, element.shape)) if element.shape else "-"
        rows.append((element.path, shape, _dtype_text(element.dtype), element.encoding, element.chunks or "-",
                     _human(element.nbytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    text = f"{shadow.filename}\n{shadow!r}\n\n{table}"
    shadow.close()
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shadows`` command."""
    parser = argparse.ArgumentParser(prog="shadows", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="describe a .h5ad/.h5mu/.zarr file without loading it")
    info.add_argument("path", help="file or store (one modality of a MuData file: file.h5mu/mod/rna)")
    info.add_argument("--format", choices=["hdf5", "h5", "zarr"], default=None)
    info.add_argument("--allow-external", action="store_true",
                      help="follow HDF5 external links and storage, and symbolic links out of a Zarr store "
                           "(refused by default: open only files you trust this way)")
    demo = commands.add_parser("demo", help="build an example dataset and walk through shadows, measuring each step")
    from shadows import demo as demo_module

    demo_module.add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_module.main(args)
    if args.command == "info":
        from shadows.errors import ShadowsError

        try:
            print(info_text(args.path, args.format, args.allow_external))
        except ShadowsError as error:
            print(f"shadows: error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
