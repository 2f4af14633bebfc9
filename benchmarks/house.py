"""The house in numbers: what issue #24 asks to measure, before and after a structural change.

Usage: ``python benchmarks/house.py [--list]``

Counts, over ``src/shadows``:

- **kind switches outside elements/**: comparisons of an element's ``kind`` with a string
  (``spec.kind == "dense"``, ``kind in ("dense", "sparse")``, ...) in any module outside ``elements/``;
- **format branches outside backends/**: tests of the storage behind a node outside ``backends/``
  (``is_hdf5``, ``is_url``, ``format == "hdf5"``/``"zarr"``, ``isinstance(..., h5py./zarr.)``, the fast
  paths' ``layout(...)`` probes, ``uses_zarrs``);
- **private names used across modules**: attribute uses ``x._name`` and imports ``from m import _name``
  of a single-underscore name that the using module does not define itself but another module does (a
  name is defined by a function, class or assignment, ``self._name = ...`` included, or by a class-level
  annotation: ``core/anndata.py`` declares the ``_elements`` it inherits with its narrower type, so its
  uses of its own ``self._elements`` are not counted);
- line counts of the shadow classes (``core/base.py``, ``core/anndata.py``, ``core/mudata.py``) and of
  the ten largest modules.

``--list`` prints every counted line. farm-studio look gives circles and upward arrows.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "shadows"

#: The element kinds (``ElementSpec.kind``); a dtype's ``kind`` ("O", "iu") and a description's are not
#: element kinds.
ELEMENT_KINDS = ("awkward", "column", "dataframe", "dense", "mapping", "scalar", "sparse")
_KINDS = "|".join(ELEMENT_KINDS)
KIND = re.compile(rf"\bkind\b\s*(==|!=|\bin\b|\bnot in\b)\s*[(\[{{]?\s*[\"']({_KINDS})[\"']"
                  rf"|[\"']({_KINDS})[\"']\s*(==|!=)\s*[\w.]*kind\b")
FORMAT = re.compile(r"\bis_hdf5\b|\bis_url\b|format\s*[!=]=\s*[\"'](hdf5|zarr)[\"']|isinstance\([^)]*\b(h5py|zarr)\."
                    r"|\b(hdf5_raw|zarr_shards)\.layout\(|\buses_zarrs\b")


def _modules() -> dict[str, Path]:
    return {str(p.relative_to(SRC)): p for p in sorted(SRC.rglob("*.py"))}


def _matching(pattern: re.Pattern[str], skip: str) -> list[str]:
    found = []
    for rel, path in _modules().items():
        if rel.startswith(skip):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def _defined(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
                    elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                        names.add(sub.attr)
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_uses() -> list[str]:
    trees = {rel: ast.parse(path.read_text()) for rel, path in _modules().items()}
    defined = {rel: _defined(tree) for rel, tree in trees.items()}
    anywhere = Counter(name for names in defined.values() for name in names)
    found = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            for name in names:
                if name not in defined[rel] and anywhere[name]:
                    found.append(f"{rel}:{node.lineno}: {name}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every counted line")
    args = parser.parse_args()
    counts = {
        "kind switches outside elements/": _matching(KIND, "elements/"),
        "format branches outside backends/": _matching(FORMAT, "backends/"),
        "private names used across modules": _private_uses(),
    }
    for what, lines in counts.items():
        print(f"{what}: {len(lines)}")
        if args.list:
            print("".join(f"    {line}\n" for line in lines), end="")
    sizes = {rel: len(path.read_text().splitlines()) for rel, path in _modules().items()}
    classes = ["core/base.py", "core/anndata.py", "core/mudata.py"]
    print("shadow classes:", ", ".join(f"{c} {sizes.get(c, 0)}" for c in classes),
          f"(total {sum(sizes.get(c, 0) for c in classes)})")
    print("largest modules:", ", ".join(f"{rel} {n}" for rel, n in sorted(sizes.items(), key=lambda x: -x[1])[:10]))
    print(f"src total: {sum(sizes.values())} lines in {len(sizes)} modules")


if __name__ == "__main__":
    sys.exit(main())
