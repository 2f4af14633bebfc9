"""Command line: ``shadows info PATH`` prints what a file holds without loading it; ``shadows demo`` walks
through the main job on a generated dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

#: What ``shadows --help`` says (plain words: argparse prints it as it is).
DESCRIPTION = ("Open AnnData and MuData files (.h5ad, .h5mu, Zarr) without loading them. 'shadows info PATH' "
               "describes a file; 'shadows demo' walks through shadows on a generated dataset.")
#: Columns ``shadows info`` fits its output to when not printing to a terminal.
DEFAULT_WIDTH = 100


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


def open_shadow(path: str, format: str | None = None, allow_external: bool = False,
                storage_options: Mapping[str, Any] | None = None):
    """An AnnDataShadow, or a MuDataShadow when the file is a MuData (:func:`shadows.read`)."""
    from shadows.io import read

    return read(path, format=format, allow_external=allow_external, storage_options=storage_options)


#: How ``_fit`` narrows the table, tried in turn until its lines fit: the columns it leaves out (chunks
#: first, then encoding, dtype, shape, the size on disk last) and how far it may cut the others (column:
#: fewest characters kept). Columns are cut in the order listed; the element path stays longest. The
#: chunks column is never cut (a cut chunk shape says nothing): it is shown whole or left out.
_LEVELS: tuple[tuple[frozenset[int], dict[int, int]], ...] = (
    (frozenset(), {}),
    (frozenset({4}), {}),
    (frozenset({4}), {3: 14, 2: 10, 0: 24}),
    (frozenset({4, 3}), {2: 10, 0: 24}),
    (frozenset({4, 3}), {2: 7, 0: 12}),
    (frozenset({4, 3, 2}), {0: 12}),
    (frozenset({4, 3, 2, 1}), {0: 12}),
    (frozenset({4, 3, 2, 1}), {0: 1}),
    (frozenset({4, 3, 2, 1, 5}), {0: 1}),
)


def _fit(rows: list[tuple[str, ...]], width: int) -> tuple[list[tuple[str, ...]], list[str]]:
    """The table narrowed to ``width`` columns (see ``_LEVELS``): its cells cut with "…" (the element
    path in its middle: its slot and its name stay), and when that is not enough whole columns left out.
    Returns the rows of the columns kept and the names (header row, first) of those left out.
    """
    natural = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for dropped, floors in _LEVELS:
        kept = [i for i in range(len(natural)) if i not in dropped]
        widths = list(natural)
        excess = sum(widths[i] for i in kept) + 2 * (len(kept) - 1) - width
        for column, floor in floors.items():
            if excess <= 0:
                break
            cut = min(excess, max(widths[column] - floor, 0))
            widths[column] -= cut
            excess -= cut
        if excess <= 0:
            break

    def cell(text: str, column: int) -> str:
        if len(text) <= widths[column]:
            return text
        return _cut_middle(text, widths[column]) if column == 0 else text[: widths[column] - 1] + "…"

    return [tuple(cell(row[i], i) for i in kept) for row in rows], [rows[0][i] for i in sorted(dropped)]


def _cut_middle(text: str, width: int) -> str:
    """``text`` cut in its middle with "…" to ``width`` characters (a long file path keeps both ends)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _wrapped(text: str, width: int) -> str:
    """The repr with long lines (many columns or keys) wrapped to ``width``, continuations indented."""
    lines = []
    for line in text.splitlines():
        line = line.expandtabs(10)
        indent = " " * min(len(line) - len(line.lstrip()) + 10, width // 2)  # room left in narrow widths
        lines += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _chunks_text(chunks: str | None) -> str:
    """The chunks cell of a table row: a group whose parts are all stored contiguously (a dataframe's
    columns, a dict's values, listed below it) says so once; others list their parts' chunk shapes.
    """
    if not chunks:
        return "-"
    parts = chunks.split()
    if len(parts) > 1 and all(part.endswith(":contiguous") for part in parts):
        return "contiguous"
    return chunks


def info_data(path: str, format: str | None = None, allow_external: bool = False,
              storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``shadows info --json`` prints: the object's kind, shape and repr, and every stored element."""
    shadow = open_shadow(path, format, allow_external, storage_options)
    try:
        described = shadow.describe()
        return {
            "path": shadow.filename, "kind": described.kind, "shape": list(described.shape),
            "axis": described.axis, "modalities": list(described.modalities), "repr": repr(shadow),
            "elements": [{"path": e.path, "shape": None if e.shape is None else list(e.shape),
                          "dtype": _dtype_text(e.dtype), "encoding": e.encoding, "chunks": e.chunks,
                          "bytes_on_disk": e.nbytes, **({"problem": e.problem} if e.problem else {})}
                         for e in shadow.stored_elements()],
        }
    finally:
        shadow.close()


def info_text(path: str, format: str | None = None, allow_external: bool = False,
              storage_options: Mapping[str, Any] | None = None, width: int = DEFAULT_WIDTH) -> str:
    """The repr plus a table of every element's shape, dtype, encoding, chunking and size on disk, fitted
    to ``width`` columns.
    """
    width = max(width, 1)
    data = info_data(path, format, allow_external, storage_options)
    rows = [("element", "shape", "dtype", "encoding", "chunks", "on disk")]
    for element in data["elements"]:
        shape = " × ".join(map(str, element["shape"])) if element["shape"] else "-"
        rows.append((element["path"], shape, element["dtype"], element["encoding"], _chunks_text(element["chunks"]),
                     _human(element["bytes_on_disk"])))
    rows, left_out = _fit(rows, width)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    if left_out:
        table += "\n" + textwrap.fill(f"({', '.join(left_out)}: left out at this width; --json lists them)", width)
    problems = "".join(f"\n\n{_wrapped(e['problem'], width)}" for e in data["elements"] if e.get("problem"))
    return f"{_cut_middle(data['path'], width)}\n{_wrapped(data['repr'], width)}\n\n{table}{problems}"


def _storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--storage-option`` (VALUE as JSON when it parses: numbers, true/false)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shadows`` command."""
    from shadows import __version__

    parser = argparse.ArgumentParser(prog="shadows", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"shadows {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="describe a .h5ad, .h5mu or Zarr file without loading it",
                               description="Describe a file without loading it: what the object holds, "
                                           "then every stored element's shape, type, encoding, chunks and "
                                           "size on disk.")
    info.add_argument("path", help="the file or store, a URL, or one modality of a MuData file "
                                   "(file.h5mu/mod/rna)")
    info.add_argument("--format", choices=["hdf5", "h5", "zarr"], default=None,
                      help="the file's format, when its name does not say (default: from the name or contents)")
    info.add_argument("--storage-option", action="append", type=_storage_option, default=[], metavar="KEY=VALUE",
                      help="an option for the storage behind a URL (credentials, endpoint), as fsspec takes "
                           "them; repeat for more")
    info.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
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

        options = dict(args.storage_option) or None
        try:
            if args.json:
                text = json.dumps(info_data(args.path, args.format, args.allow_external, options), indent=2)
            else:
                width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns if sys.stdout.isatty() \
                    else DEFAULT_WIDTH
                text = info_text(args.path, args.format, args.allow_external, options, width=width)
        except (ShadowsError, OSError) as error:
            if args.json:  # scripts parse what they get: the error as JSON too (and the exit status says so)
                print(json.dumps(json_error(error, args.path), indent=2))
            else:
                print(f"shadows: error: {error}", file=sys.stderr)
            return 1
        return _print(text)
    return 0


def json_error(error: BaseException, path: str) -> dict[str, Any]:
    """What ``shadows info --json`` prints when it fails: ``{"error": {"type", "message", "path"}}``.

    Parameters
    ----------
    error
        What was raised (a :class:`~shadows.errors.ShadowsError`, or an :class:`OSError`).
    path
        The path given on the command line.

    Returns
    -------
    The object to print as JSON: ``type`` is the error's class name (``"ShadowsFileNotFoundError"``),
    ``message`` its text, which names the file and the element.
    """
    return {"error": {"type": type(error).__name__, "message": str(error), "path": path}}


def _print(text: str) -> int:
    """Print ``text`` to stdout; a reader that stops early (``shadows info FILE | head``) is no error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        # stdout's buffer cannot be flushed any more: point it at /dev/null so the exit does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
