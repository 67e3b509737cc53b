"""`scratchdiff repro`: the command line of differential.repro (its parser and what it prints)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from differential.errors import InputError

EXIT_OK, EXIT_DIVERGED = 0, 1


def add_repro_parser(commands: Any, positive_int: Any, seed: Any, positive_float: Any) -> None:
    from differential.model_options import add_model_flags, add_step_flags

    repro = commands.add_parser(
        "repro", help="write a small standalone pytest file for each finding of the report",
        description="Run the report, then for each finding write a standalone pytest file and a .npz data file "
                    "(no pickle) into --out: the blamed module's weights, its captured inputs (and output "
                    "gradient), and the reference's results. The test rebuilds your module from the saved weights, "
                    "runs the failing phase only and compares under the report's tolerance model; it needs neither "
                    "torch nor the rest of the model. Each case is first shrunk (batch, sequence length, heads, "
                    "widths) to the smallest one that still diverges in the same module, phase and kind. With "
                    "--check DIR: rerun every repro in DIR and say which pass now. Exit 0: repros written (or, with "
                    "--check, every repro passes); 1: with --check, some repro still fails; 2: bad input.")
    repro.add_argument("--check", metavar="DIR", default=None,
                       help="rerun the repros written in DIR and say which pass now (writes nothing)")
    repro.add_argument("-o", "--out", metavar="DIR", default="repros",
                       help="folder for the test files and their data (created if missing; default: repros)")
    repro.add_argument("--no-shrink", action="store_true",
                       help="write each case at the report's own sizes instead of the smallest that still diverges")
    repro.add_argument("--impl", choices=("class", "functional"), default="class",
                       help="the implementation under test (default: class)")
    repro.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="precision of the implementation under test (default: float64)")
    repro.add_argument("--seed", type=seed, default=0, help="seed for the weights and the batch (default: 0)")
    repro.add_argument("--batch-size", type=positive_int, default=16,
                       help="sequences in the report's batch, before shrinking (default: 16)")
    repro.add_argument("--layers", type=positive_int, default=None, help="transformer blocks (default: 1)")
    add_step_flags(repro, "of the optimizer-step check and its repro")
    repro.add_argument("--fault", metavar="NAME", default=None,
                       help="switch on one fault of the catalogue while the report and the shrinking run (the "
                            "written test itself runs whatever code is installed)")
    repro.add_argument("--adapter", metavar="MODULE:OBJECT", default=None,
                       help="your own model through its adapter (see docs/adapter.md); the test rebuilds it through "
                            "the same adapter, so it runs in your repository with your code")
    add_model_flags(repro)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for the generated tests' docstrings)."""
    words = ["scratchdiff", "repro"]
    for flag, name, default in (("--impl", "impl", "class"), ("--dtype", "dtype", "float64"), ("--seed", "seed", 0),
                                ("--batch-size", "batch_size", 16), ("--layers", "layers", None),
                                ("--optimizer", "optimizer", "adam"), ("--lr", "lr", 3e-3),
                                ("--fault", "fault", None), ("--adapter", "adapter", None),
                                ("--arch", "arch", None), ("--config", "config", None), ("-o", "out", "repros")):
        value = getattr(args, name, default)
        if value != default:
            words += [flag, str(value)]
    if args.no_shrink:
        words.append("--no-shrink")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        return _check(Path(args.check))

    from differential import faults, repro
    from differential.model_options import model_from_args
    from differential.report import ReportOptions

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} is a file, not a folder")
    try:
        model = model_from_args(args, num_layers=args.layers)
        adapter = None
        if args.adapter is not None:
            from differential.adapter import AdapterOptions, load_adapter, run_config

            if args.fault:
                raise InputError("--adapter cannot be combined with --fault (it switches on a fault of this "
                                 "project's models)")
            adapter = load_adapter(args.adapter, AdapterOptions(model, args.dtype, args.seed))
            model = run_config(adapter, model, args.layers)
        options = ReportOptions(impl=args.impl, dtype=args.dtype, seed=args.seed, batch_size=args.batch_size,
                                model=model, optimizer=args.optimizer, lr=args.lr, adapter=adapter)
        if args.fault is not None:
            options = faults.get_fault(args.fault).options_for(options)
    except ValueError as err:
        raise InputError(str(err)) from None
    with faults.activate(args.fault):
        written = repro.write_repros(options, out, _command(args), adapter_spec=args.adapter,
                                     shrink_cases=not args.no_shrink)
    print(summary(written))
    return EXIT_OK


def summary(written: list[Any]) -> str:
    """What was written, one finding a line; and the next step."""
    if not written:
        return "scratchdiff repro: the report matches: nothing to reproduce"
    lines = []
    for w in written:
        d = w.finding
        head = f"{d.module} ({d.phase}, {d.kind})"
        if w.test is None:
            lines.append(f"no repro for {head}: {w.reason}")
            continue
        state = "fails now, as it should" if w.fails_now else "PASSES NOW: the bug does not show alone at this size"
        lines.append(f"wrote {w.test} (+ {w.data.name}) for {head}; shrunk: {w.after.reduced(w.before)}; {state}")
    count = sum(w.test is not None for w in written)
    folder = next((w.test.parent for w in written if w.test is not None), None)
    if folder is not None:
        lines.append(f"{count} repro(s); after a fix: scratchdiff repro --check {folder}  (or pytest {folder})")
    return "\n".join(lines)


def _check(folder: Path) -> int:
    from differential import repro

    if not folder.is_dir():
        raise InputError(f"--check {str(folder)!r} is not a folder")
    outcomes = repro.check_dir(folder)
    if not outcomes:
        raise InputError(f"--check {str(folder)!r} holds no repro (test_*.py with its .npz)")
    for o in outcomes:
        mark = "PASS" if o.passed else "FAIL"
        tail = "" if o.passed else f": {o.message}"
        print(f"{mark} {o.test.name} ({o.seconds:.3f} s){tail}")
    passed = sum(o.passed for o in outcomes)
    print(f"scratchdiff repro: {passed} of {len(outcomes)} repro(s) pass")
    return EXIT_OK if passed == len(outcomes) else EXIT_DIVERGED
