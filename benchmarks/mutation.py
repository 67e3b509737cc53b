"""Mutation testing of the reasoning modules: how many mutants of each file the default suite kills.

Runs mutmut 3 (the ``dev`` extra: ``.venv/bin/pip install -e '.[dev]'``) over the chosen files of
``differential/`` with the default test suite (``tests/``, not the slow tests), then prints a table
per file: mutants, killed, survived, timeout, no tests (no test reaches the mutated function),
equivalent (mutants listed in ``benchmarks/mutation_equivalent.md`` whose mutation still reads as
recorded there) and the kill rate = (killed + timeout) / (mutants - equivalent). The target is 90 %.

    .venv/bin/python benchmarks/mutation.py                   # the reasoning modules
    .venv/bin/python benchmarks/mutation.py --files differential/compare.py differential/weights.py
    .venv/bin/python benchmarks/mutation.py --files differential/compare.py --list-survivors
    .venv/bin/python benchmarks/mutation.py --max-children 2  # worker processes (default: the cores)
    .venv/bin/python benchmarks/mutation.py --test-equivalent # run the listed equivalent mutants too

Every run starts afresh: it deletes ``mutants/`` (git-ignored; mutmut copies the packages and the
tests there and runs them on the copy) because mutmut's cache keeps which tests reach which function
only for the files of the run that made it, so a later run over other files would call their mutants
untested. The repository itself is never modified. Mutants listed as equivalent are not run unless
``--test-equivalent``. After a run, ``.venv/bin/mutmut results``, ``.venv/bin/mutmut show NAME`` and
``.venv/bin/mutmut browse`` read the same ``mutants/`` folder, and ``.venv/bin/mutmut run NAME``
rechecks one mutant in about 20 s (say, after adding the test that should kill it).

What it costs, on two cores: a minute or two to copy, mutate and run the whole suite once (mutmut
learns which tests reach which function), then half a second or so per killed mutant (this file is
also the pytest plugin that runs the fastest tests first) and, per surviving mutant, every test that
reaches its function: 10 to 50 s. So the survivors set the time: compare.py (446 mutants) took
21 minutes with 91 survivors (and tests in mutmut's own order) and takes 4 now that its tests kill
them all; weights.py (332) took 17 minutes, 3.5 now; diagnose.py (349, 84 survivors whose tests
take 47 s) takes 36 minutes.

The default suite has since grown to over two minutes, and every report test reaches most functions
of phases.py, localize.py, describe.py and findings.py (2,568 mutants together), so a run over those
with the whole suite takes hours. A subset of the suite gives a lower bound on its kill rate (the
whole suite kills every mutant the subset kills), and pytest reads extra options from the environment:

    PYTEST_ADDOPTS="-k 'mutants or report_details'" .venv/bin/python benchmarks/mutation.py \\
        --files differential/phases.py differential/localize.py differential/describe.py differential/findings.py

runs those four against the mutant-killing unit tests and test_report_details.py in about 11 minutes
on a quiet machine (2,568 mutants, 641 s on 2 cores at commit time; 99.1 % killed). mutmut copies
README.md, docs/ and examples/ into mutants/ too (pyproject's also_copy), so every test can run
there; a test that fails in the working tree makes mutmut stop with "failed to collect stats".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REASONING = ("differential/compare.py", "differential/localize.py", "differential/diagnose.py",
             "differential/describe.py", "differential/phases.py", "differential/weights.py",
             "differential/findings.py")
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.md"
COLUMNS = ("killed", "survived", "timeout", "no tests", "equivalent", "other")

# The mutmut run, in a fresh interpreter at the repository root (see _child).
_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.mutation import _child; _child(*sys.argv[2:])"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(REASONING), metavar="FILE",
                        help="files to mutate, relative to the repository root (default: the reasoning modules)")
    parser.add_argument("--list-survivors", action="store_true",
                        help="print the diff of every surviving mutant (and every mutant no test reaches)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested at once (default: the number of cores)")
    parser.add_argument("--test-equivalent", action="store_true",
                        help="test the mutants listed as equivalent too (by default they are skipped: each one "
                             "survives every test that reaches it, the slowest kind of mutant to test)")
    args = parser.parse_args()
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed: .venv/bin/pip install -e '.[dev]'", file=sys.stderr)
        return 2

    files = []
    for name in args.files:
        path = Path(name).resolve().relative_to(ROOT) if Path(name).is_absolute() else Path(name)
        if not (ROOT / path).is_file():
            print(f"note: skipping {path}: no such file")
        elif path.parts[0] != "differential" or path.suffix != ".py":
            print(f"note: skipping {path}: mutation testing covers the .py files of differential/")
        else:
            files.append(path.as_posix())
    if not files:
        print("nothing to mutate", file=sys.stderr)
        return 2

    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # One thread per test process: with several mutants tested at once, torch's and BLAS's thread
    # pools would only fight over the cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    print(f"mutmut over {', '.join(files)} with {args.max_children} workers", flush=True)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), json.dumps(files), str(args.max_children),
                          "test" if args.test_equivalent else "skip"], cwd=ROOT, env=env, check=False)
    seconds = time.perf_counter() - start
    print()
    if run.returncode != 0:
        print(f"mutmut run failed (exit code {run.returncode}); see its output above", file=sys.stderr)
        return 1

    os.chdir(ROOT)  # mutmut's readers take paths relative to the root
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    equivalent = _equivalent_mutants()
    table, survivors, stale = {}, [], []
    for path in files:
        meta = ROOT / "mutants" / f"{path}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
        counts = Counter()
        for name, code in codes.items():
            status = status_by_exit_code[code]
            if code == _EQUIVALENT:
                counts["equivalent"] += 1  # listed, and checked to read as listed before the run
                continue
            if status in ("survived", "no tests"):
                diff = get_diff_for_mutant(name, path=path)
                if status == "survived" and name in equivalent:
                    if _mutated_line(diff) == equivalent[name]:
                        counts["equivalent"] += 1
                        continue
                    stale.append(name)
                survivors.append((name, status, diff))
            counts[status if status in COLUMNS else "other"] += 1
        table[path] = (len(codes), counts)

    print(f"{'file':32} {'mutants':>7} " + " ".join(f"{c:>10}" for c in COLUMNS) + f" {'kill rate':>9}")
    total_n, total = 0, Counter()
    for path, (n, counts) in table.items():
        total_n, total = total_n + n, total + counts
        print(_row(path, n, counts))
    if len(table) > 1:
        print(_row("total", total_n, total))
    print(f"\n{seconds:.0f} s for the mutmut run ({args.max_children} workers, {os.cpu_count()} cores)")
    for name in stale:
        print(f"note: {name} is listed as equivalent in {EQUIVALENT.name}, but its mutation now reads "
              "differently (the numbering moved): counted as a survivor; update the list")
    if args.list_survivors:
        for name, status, diff in survivors:
            print(f"\n# {name}: {status}\n{diff}")
    elif survivors:
        print(f"{len(survivors)} mutants survived or were reached by no test: --list-survivors shows them, "
              "or .venv/bin/mutmut show NAME")
    return 0


_EQUIVALENT = 34  # the exit code mutmut reads as "skipped"


def _child(files: str, max_children: str, equivalent: str) -> None:
    """``mutmut run`` over ``files`` (JSON) only, as the `mutmut` command runs it: mutmut reads
    [tool.mutmut] from pyproject.toml, and this narrows only_mutate to the chosen files. With
    ``equivalent == "skip"``, the mutants listed in mutation_equivalent.md whose mutation still reads as
    recorded are marked once generated, and mutmut then leaves them alone as it does any mutant with
    a result."""
    import mutmut.__main__ as mutmut_main  # sets the fork start method, as the `mutmut` command does
    from mutmut.configuration import config

    config().only_mutate = json.loads(files)
    if equivalent == "skip":
        generate = mutmut_main.create_mutants

        def generate_then_mark(*args, **kwargs):
            stats = generate(*args, **kwargs)
            _mark_equivalent(json.loads(files))
            return stats

        mutmut_main.create_mutants = generate_then_mark
    mutmut_main.cli(["run", "--max-children", max_children])


def _mark_equivalent(files: list[str]) -> None:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    equivalent = _equivalent_mutants()
    for path in files:
        data = SourceFileMutationData(path=path)
        data.load()
        marked = [name for name in data.exit_code_by_key if name in equivalent
                  and _mutated_line(get_diff_for_mutant(name, path=path)) == equivalent[name]]
        for name in marked:
            data.exit_code_by_key[name] = _EQUIVALENT
        if marked:
            data.save()


def pytest_collection_modifyitems(items: list) -> None:
    """A pytest hook for mutmut's test runs only (``[tool.mutmut]`` loads this file with ``-p
    benchmarks.mutation``; the test runs' working directory is ``mutants/``): the fastest tests
    first, by the durations mutmut measured, so that a killed mutant dies at its cheapest failing
    test rather than after whichever slow tests came first (mutmut passes them in no useful order)."""
    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return  # the first, measuring run
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


def _row(label: str, n: int, counts: Counter) -> str:
    judged = n - counts["equivalent"]
    rate = f"{100 * (counts['killed'] + counts['timeout']) / judged:8.1f}%" if judged else f"{'-':>9}"
    return f"{label:32} {n:7d} " + " ".join(f"{counts[c]:10d}" for c in COLUMNS) + f" {rate}"


def _mutated_line(diff: str) -> str:
    """The added lines of a mutant's diff, whitespace squeezed: what an entry of the equivalent list
    records, so that an entry whose number now names another mutation is noticed."""
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " ".join(" ".join(added).split())


def _equivalent_mutants() -> dict[str, str]:
    """``{mutant name: its mutated line}`` from the list in mutation_equivalent.md: lines of the form
    ``- `NAME` ``MUTATED LINE``: reason`` (see the comment at the top of that file)."""
    if not EQUIVALENT.is_file():
        return {}
    entries = re.findall(r"^- `([\w.ǁ]+__mutmut_\d+)` ``(.*?)``:", EQUIVALENT.read_text(), re.MULTILINE)
    return {name: " ".join(line.split()) for name, line in entries}


if __name__ == "__main__":
    sys.exit(main())
