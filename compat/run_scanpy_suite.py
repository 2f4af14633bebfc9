"""Run the installed scanpy's own tests with their datasets served as shadows, beside in-memory controls.

Usage (from the repository root, with the interpreter of the stack to test)::

    .venv/bin/python compat/run_scanpy_suite.py --modes control,shadow,view_control,view,dask_control,dask
    .venv/bin/python compat/run_scanpy_suite.py --report          # print the last results again

See ``compat/README.md`` for what the modes are and how to read the output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

MODES = ("control", "shadow", "view_control", "view", "dask_control", "dask")
# each shadow mode and its in-memory control
CONTROL_OF = {"shadow": "control", "view": "view_control", "dask": "dask_control"}
# what a mode must reach: share of the control's passing tests (the dask backend: 95 %)
GOAL = {"shadow": 100.0, "view": 100.0, "dask": 95.0}

# 28 modules of scanpy's tests: pp, tl, get, metrics, plotting
MODULES = [
    # pp
    "test_preprocessing", "test_normalization", "test_highly_variable_genes", "test_scaling", "test_qc_metrics",
    "test_combat", "test_pca", "test_neighbors", "test_neighbors_key_added", "test_scrublet",
    # tl
    "test_clustering", "test_dendrogram", "test_embedding", "test_embedding_density", "test_ingest", "test_paga",
    "test_rank_genes_groups", "test_rank_genes_groups_logreg", "test_score_genes", "test_marker_gene_overlap",
    "test_filter_rank_genes_groups", "test_sim", "test_aggregated",
    # get, metrics
    "test_get", "test_metrics",
    # plotting
    "test_plotting", "test_plotting_utils", "test_plotting_embedded",
]

# Failures shown to come from a test's own assumption about a concrete type, not from shadows: a pattern on the
# node id (regular expression, searched), the modes it applies to, and the reason. Listed apart in the report.
TYPE_ASSUMPTIONS: list[tuple[str, tuple[str, ...], str]] = [
    (r"test_highly_variable_genes\.py::test_pearson_residuals_(general|batch)\[", ("shadow", "view", "dask"),
     "pd.testing.assert_frame_equal(output_df, adata.var) asserts isinstance(output_df, type(adata.var)) "
     "(check_frame_type=True): a shadow's var is a TrackedFrame, a pandas.DataFrame subclass, so a plain "
     "DataFrame on the left fails; with check_frame_type=False the frames are equal (compat/README.md)"),
]


def _stack() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}-scanpy{version('scanpy')}-anndata{version('anndata')}"


def _sdist() -> Path:
    """scanpy's source distribution of exactly the installed version, unpacked under .cache/sdist."""
    ver = version("scanpy")
    folder = CACHE / "sdist"
    root = folder / f"scanpy-{ver}"
    if (root / "tests").is_dir():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"scanpy-{ver}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"scanpy=={ver}", "-d", str(folder)], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return root


def _module_paths(root: Path, modules: list[str]) -> list[str]:
    paths = []
    for name in modules:
        # scanpy 1.12 moved the plotting tests to tests/plotting/legacy/ (embedded/ without the prefix)
        legacy = root / "tests" / "plotting" / "legacy"
        for candidate in (root / "tests" / name, root / "tests" / f"{name}.py", root / name, legacy / f"{name}.py",
                          legacy / name.removeprefix("test_plotting_")):
            if candidate.exists():
                paths.append(str(candidate.relative_to(root)))
                break
        else:
            print(f"[compat] no module {name} in {root / 'tests'}: skipped", file=sys.stderr)
    return paths


def _load(folder: Path, prefix: str) -> dict:
    merged: dict = {}
    for file in sorted(folder.glob(f"{prefix}-*.json")):
        data = json.loads(file.read_text())
        if isinstance(data, dict) and prefix == "usage":
            for key, value in data.items():
                merged.setdefault(key, []).extend(value)
        else:
            merged.update(data)
    return merged


def run_mode(mode: str, *, root: Path, data: Path, out: Path, modules: list[str], args: argparse.Namespace,
             select: Path | None) -> float:
    """Run one mode's pytest; what the plugin records goes to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    env = dict(os.environ)
    env.update(SHADOWS_COMPAT_MODE=mode, SHADOWS_COMPAT_DATA=str(data), SHADOWS_COMPAT_OUT=str(out),
               SHADOWS_COMPAT_TIMEOUT=str(args.timeout), MPLBACKEND="agg",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.pop("SHADOWS_COMPAT_SELECT", None)
    if select is not None:
        env["SHADOWS_COMPAT_SELECT"] = str(select)
    command = [sys.executable, "-m", "pytest", *modules, "-p", "scanpy_shadows_plugin", "-q", "-rN",
               "--tb=short", "-p", "no:randomly", f"--junitxml={out / 'junit.xml'}", "-o", "cache_dir=" +
               str(out / "pytest_cache"), "-W", "ignore::DeprecationWarning"]
    if args.n and args.n > 0:
        command += ["-n", str(args.n)]
    if args.k:
        command += ["-k", args.k]
    command += args.pytest_args
    print(f"[compat] {mode}: {' '.join(command[3:6])} … ({len(modules)} modules)", flush=True)
    start = time.monotonic()
    with open(out / "pytest.log", "w") as log:
        subprocess.run(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - start
    tail = (out / "pytest.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
    print(f"[compat] {mode}: {elapsed:.0f} s, {tail[0]}", flush=True)
    return elapsed


def _cause(entry: dict) -> str:
    """Exception type and the first line of its message, with addresses and temporary paths blanked."""
    message = (entry.get("message") or "").strip()
    kind, _, rest = message.partition(":")
    if not re.fullmatch(r"[\w.]+", kind or ""):
        kind, rest = "Failed", message
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if not first:  # a bare assertion: name the failing statement and where it is
        where = (entry.get("frames") or [entry.get("path") or ""])[-1]
        first = f"{entry.get('source') or ''} (at {where})".strip()
    first = re.sub(r"0x[0-9a-f]+", "0x…", first)
    first = re.sub(r"/tmp/\S+", "/tmp/…", first)
    first = re.sub(r"pytest-\d+", "pytest-N", first)
    return f"{kind}: {first}"[:220]


def _assumption(nodeid: str, mode: str) -> str | None:
    for pattern, modes, reason in TYPE_ASSUMPTIONS:
        if mode in modes and re.search(pattern, nodeid):
            return reason
    return None


def report(stack_dir: Path, modes: list[str], *, details: int) -> str:
    """The tables and grouped causes for every shadow mode whose control has results."""
    lines: list[str] = [f"# scanpy's tests on shadows: {stack_dir.name}", ""]
    usage = _load(stack_dir / "control", "usage")
    results = {mode: _load(stack_dir / mode, "results") for mode in MODES if (stack_dir / mode).is_dir()}
    if usage:
        lines.append(f"{len(set(usage.get('collected', [])))} tests collected in control, "
                     f"{len(set(usage.get('using', [])))} of them load a dataset; "
                     "the other modes run those that pass in control")
        lines.append("")
    lines += ["| mode | control | control passes | passing here | % | goal | pass here, fail in control |",
              "|---|---|---:|---:|---:|---:|---:|"]
    sections: list[str] = []
    for mode in modes:
        if mode not in CONTROL_OF or mode not in results or CONTROL_OF[mode] not in results:
            continue
        control = results[CONTROL_OF[mode]]
        here = results[mode]
        # the tests this mode ran (the others do not load a dataset and behave alike in every mode)
        ran = set(here) | (set(usage.get("using", [])) & {t for t, e in results["control"].items()
                                                         if e["outcome"] == "passed"})
        passing = {t for t, e in control.items() if e["outcome"] == "passed" and t in ran}
        missing = sorted(t for t in passing if here.get(t, {}).get("outcome") != "passed")
        ok = len(passing) - len(missing)
        extra = sum(1 for t, e in here.items() if e["outcome"] == "passed" and t in control and t not in passing)
        assumed = {t: r for t in missing if here.get(t, {}).get("outcome") == "failed" and (r := _assumption(t, mode))}
        pct = 100.0 * ok / len(passing) if passing else 100.0
        pct_adj = 100.0 * (ok + len(assumed)) / len(passing) if passing else 100.0
        lines.append(f"| {mode} | {CONTROL_OF[mode]} | {len(passing)} | {ok} | {pct:.1f} "
                     f"({pct_adj:.1f} without type assumptions) | {GOAL[mode]:.0f} | {extra} |")
        groups: dict[str, list[str]] = defaultdict(list)
        for test in missing:
            if test in assumed:
                continue
            entry = here.get(test, {"outcome": "not run", "message": "not run (crashed or deselected)"})
            groups[_cause(entry) if entry["outcome"] == "failed" else f"[{entry['outcome']}] "
                   f"{entry.get('message', '')}"[:220]].append(test)
        sections += ["", f"## {mode}: {len(missing)} tests pass in {CONTROL_OF[mode]} but not here, "
                     f"{len(groups)} causes", ""]
        for cause, tests in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            sections.append(f"- **{len(tests)}** × `{cause}`")
            where = here.get(tests[0], {}).get("frames") or []
            if where:
                sections.append(f"  - at: {' → '.join(where[-2:])}")
            for test in tests[:details]:
                sections.append(f"  - {test}")
            if len(tests) > details:
                sections.append(f"  - … and {len(tests) - details} more")
        if assumed:
            sections += ["", f"### {mode}: {len(assumed)} failures from the test's own assumption about a type", ""]
            by_reason: dict[str, list[str]] = defaultdict(list)
            for test, reason in sorted(assumed.items()):
                by_reason[reason].append(test)
            for reason, tests in by_reason.items():
                sections.append(f"- **{len(tests)}** × {reason}")
                sections += [f"  - {test}" for test in tests[:details]]
                if len(tests) > details:
                    sections.append(f"  - … and {len(tests) - details} more")
    return "\n".join(lines + sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, run in this order (default all: {','.join(MODES)})")
    parser.add_argument("--modules", default=",".join(MODULES),
                        help="comma-separated test modules (names under scanpy's tests/); default: 28 modules")
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("-n", type=int, default=0, help="pytest-xdist workers (0: none)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test setup or call")
    parser.add_argument("--all-tests", action="store_true",
                        help="run every collected test in every mode, not only those that load a dataset")
    parser.add_argument("--report", action="store_true", help="only print the report of the last results")
    parser.add_argument("--details", type=int, default=6, help="tests listed per cause")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    stack_dir = CACHE / _stack()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}: choose among {', '.join(MODES)}")
    if not args.report:
        root = _sdist()
        sys.path.insert(0, str(HERE))
        from _datasets import build

        data = stack_dir / "data"
        print(f"[compat] {_stack()}: scanpy tests from {root}, datasets in {data}", flush=True)
        build(data)
        modules = _module_paths(root, [m.strip() for m in args.modules.split(",") if m.strip()])
        for mode in modes:
            select = None
            usage = _load(stack_dir / "control", "usage")
            if mode != "control" and not args.all_tests and usage.get("using"):
                passed = {t for t, e in _load(stack_dir / "control", "results").items() if e["outcome"] == "passed"}
                select = stack_dir / "selected.txt"
                select.write_text("\n".join(sorted(set(usage["using"]) & passed)) + "\n")
            run_mode(mode, root=root, data=data, out=stack_dir / mode, modules=modules, args=args, select=select)
    text = report(stack_dir, modes if not args.report else list(MODES), details=args.details)
    (stack_dir / "report.md").write_text(text)
    print(text)
    print(f"[compat] report saved to {stack_dir / 'report.md'}; raw results under {stack_dir}/<mode>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
