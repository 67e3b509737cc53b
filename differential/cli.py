"""The `scratchdiff` command line: parses flags, dispatches, prints.

Exit codes: 0 match (or success), 1 divergence, 2 bad input (one line naming the flag, file or
value), 3 an internal error (one line saying it is a bug in scratchdiff; the traceback goes to a
file whose path is printed), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from differential.errors import InputError, one_line, save_traceback, users_file, users_frame
from differential.model_options import add_step_flags, positive_float

# differential.training pulls in numpy: main() imports it inside its Ctrl-C handler, so that an
# interrupt in the first moments of a run is one line, not a traceback.
training: Any = None

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SGD_DEFAULT_LR = 0.1  # Adam's 3e-3 leaves SGD (momentum 0.9) near 0%; 0.03-0.3 all reach 100%


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage + message; keep one line
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value < 2**32:  # numpy's seeded generators take 0 .. 2**32 - 1
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scratchdiff", description=(
        "Check a from-scratch numpy transformer against PyTorch, module by module."))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from differential.model_options import add_model_flags

    train = commands.add_parser("train", help="train on sequence reversal and print test accuracy",
                                description="Train one implementation on sequence reversal; report "
                                            "exact-sequence and per-token accuracy on held-out sequences.")
    train.add_argument("--impl", choices=training.IMPLEMENTATIONS, default="class",
                       help="which implementation to train (default: class)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="passes over the training set (default: 5)")
    train.add_argument("--seed", type=_seed, default=0, help="seed for weights and data (default: 0)")
    train.add_argument("--lr", type=positive_float, default=None,
                       help=f"learning rate (default: 3e-3 with adam, {SGD_DEFAULT_LR:g} with sgd)")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 64)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                       help="optimizer (default: adam; sgd uses momentum 0.9)")
    train.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="floating-point precision (default: float64)")
    train.add_argument("--json", action="store_true",
                       help="print one JSON object (exact_match, token_accuracy, loss, seconds, ...) "
                            "instead of a table")
    train.add_argument("--task", choices=("auto", "reverse", "mirror"), default=None,
                       help="what to learn: reverse (the reversed sequence) or mirror (the first half copied, then "
                            "reversed: learnable under a causal mask); auto: mirror for a causal model, reverse "
                            "otherwise (default: auto)")
    add_model_flags(train)
    report = commands.add_parser(
        "report", help="compare a scratch model with the reference, module by module",
        description="Run the implementation under test and the reference on one seeded batch with "
                    "shared weights; report the first module whose forward output or gradient diverges, "
                    "with its phase, kind, source lines and a hint, then every independent root cause "
                    "(the findings). The verdict, the findings and a one-line summary come last. Exit 0: everything "
                    "matches; 1: a divergence; 2: bad input; 3: a bug in scratchdiff; 130: interrupted.")
    report.add_argument("--impl", choices=training.IMPLEMENTATIONS, default="class",
                        help="the implementation under test (default: class)")
    report.add_argument("--against", choices=training.IMPLEMENTATIONS, default="torch",
                        help="the reference to compare with; it always runs in float64 as the oracle "
                             "(default: torch)")
    report.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision of the implementation under test; float32 is judged against the "
                             "float64 reference with a noise floor from the reference's own float32 run "
                             "(default: float64)")
    report.add_argument("--seed", type=_seed, default=0, help="seed for the weights and the batch (default: 0)")
    report.add_argument("--batch-size", type=_positive_int, default=16, help="sequences in the batch (default: 16)")
    report.add_argument("--layers", type=_positive_int, default=None,
                        help="transformer blocks (default: 1, or the config your --adapter fixes)")
    report.add_argument("--isolated", action="store_true",
                        help="also run every module alone on the reference's inputs and output gradient, "
                             "so every broken module shows, not only the first")
    report.add_argument("--first-only", action="store_true",
                        help="report only the first divergence; skips teacher forcing (running each disagreeing "
                             "module and the loss alone on the reference's values), which finds every independent "
                             "fault in one run. Cheaper, but a second fault hides behind the first")
    report.add_argument("--steps", type=_non_negative_int, default=0,
                        help="train both side by side for N steps on the same batches and report the first "
                             "step where the loss or a parameter diverges (default: 0, skip)")
    add_step_flags(report, "for the optimizer-step and training checks")
    report.add_argument("--weights", metavar="FILE", default=None,
                        help="start from these weights (.npz or .safetensors, names as in the model) "
                             "instead of the seeded initial ones")
    report.add_argument("--three-way", action="store_true",
                        help="the implementation under test (--impl, or --adapter), a second one (--other) and torch, "
                             "each pair compared: where the two disagree, show both source locations and which one "
                             "to port the fix from")
    report.add_argument("--other", choices=("class", "functional"), default=None,
                        help="the second implementation of --three-way (default: the bundled model not under test; "
                             "class with --adapter)")
    report.add_argument("--fault", metavar="NAME", default=None,
                        help="switch on one fault of the catalogue (see `scratchdiff faults`) and report on it")
    report.add_argument("--adapter", metavar="MODULE:OBJECT", default=None,  # [adapter]
                        help="report on your own model instead of --impl: an Adapter instance or a factory (called "
                             "with the run's options: config, dtype, seed, layers; or with no arguments), imported "
                             "by module path from the current directory; what your code prints is captured and "
                             "shown in its own section (see docs/adapter.md)")
    report.add_argument("--reference", metavar="MODULE:OBJECT", default=None,
                        help="compare against your own torch model instead of the bundled reference: a "
                             "torch.nn.Module or a zero-argument factory returning one, imported by module path "
                             "from the current directory; forward(tokens) must return the logits (B, T, vocab); "
                             "with --adapter, its name map points at this model's own names (see docs/reference.md)")
    add_model_flags(report)
    report.add_argument("--format", choices=("text", "json", "html"), default="text",
                        help="text (terminal), json (stable schema, identical bytes for identical runs) or "
                             "html (self-contained, with plots; needs -o) (default: text)")
    report.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write the report to FILE instead of standard output (a regular file or a new name; "
                             "a symlink is written through to its target; written whole or not at all)")
    report.add_argument("-q", "--quiet", action="store_true",
                        help="print only the one-line summary (the verdict and the first finding); with -o the "
                             "full report still goes to FILE")
    faults_cmd = commands.add_parser("faults", help="list the fault catalogue",
                                     description="List every fault of the catalogue: name, bug class, the "
                                                 "implementation it breaks, and where the report must localize it.")
    faults_cmd.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")

    zoo = commands.add_parser("zoo", help="run the report on every fault and print the detection matrix",
                              description="Run the report with each fault of the catalogue switched on, one at a "
                                          "time; print whether each was detected, localized (module and phase) "
                                          "and given the right kind, beside what the naive checks say. Exit 0 "
                                          "only when every fault is detected and localized and the clean model "
                                          "matches. With --combos: several faults at once, each combination "
                                          "checked for every one of its faults among the report's findings; "
                                          "exit 0 only when every fault of every combination is found.")
    zoo.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    zoo.add_argument("--train", action="store_true",
                     help="also train with each fault on (standard budget) and show test accuracy (slow)")
    zoo.add_argument("--fault", metavar="NAME", action="append", default=None,
                     help="run only this fault (repeatable)")
    zoo.add_argument("--combos", action="store_true",
                     help="switch on combinations of faults that break different code at once and check that the "
                          "report's findings name every one of them (not only the first); cannot be combined "
                          "with --train or --fault")
    zoo.add_argument("--seed", type=_seed, default=0, help="seed for weights and batch (default: 0)")
    zoo.add_argument("-o", "--output", metavar="FILE", default=None,
                     help="write the matrix to FILE (a regular file or a new name), 120 columns wide")
    zoo.add_argument("--matrix", action="store_true",
                     help="every fault in every architecture variant (scratch_model.config.VARIANTS) where its code "
                          "runs: a fault x variant matrix of localized (ok), not localized (XX) and not applicable "
                          "(.); exit 0 only when every applicable cell is localized")
    add_model_flags(zoo)
    _add_sweep_parser(commands)
    from differential.repro_cli import add_repro_parser

    add_repro_parser(commands, _positive_int, _seed, positive_float)
    return parser


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value}")
    return value


@contextlib.contextmanager
def _bad_input(command: str) -> Iterator[None]:
    """Preparing a command from its flags: a ValueError here is about the user's input (exit 2)."""
    try:
        yield
    except ValueError as err:
        raise UsageError(f"scratchdiff {command}: error: {one_line(err)}") from None


def _users_code(flag: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, where an exception raised inside the user's own code (a file outside this
    project's packages, called from ``call``) is the user's input error naming ``flag``."""
    try:
        return call(*args)
    except Exception as err:
        frames = [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
        if any(users_file(name) for name in frames[2:]):  # [0] is here, [1] is ``call`` itself
            raise UsageError(f"scratchdiff report: error: {flag}: your code raised {type(err).__name__}: "
                             f"{one_line(err)}") from None
        raise


def _check_writable(path: str) -> Path:
    """The file ``-o PATH`` will write, checked before any work starts."""
    from differential.output import check_target

    try:
        return check_target(path)
    except InputError as err:
        raise UsageError(f"scratchdiff: error: {err}") from None


SIZE_FLAGS = (("--batch-size", "batch_size", 16), ("--layers", "layers", 1), ("--steps", "steps", 0),
              ("--embed-dim", "embed_dim", 32), ("--ff-dim", "ff_dim", 64), ("--heads", "heads", 4),
              ("--seq-len", "seq_len", 8))


def _report_estimate(args: argparse.Namespace, options: Any) -> Any:
    """What the report will cost; refused, naming the flags that make it big, when the machine
    does not have the memory free."""
    from differential.budget import free_memory, human_bytes, report_estimate

    estimate = report_estimate(options.model, options.batch_size, options.steps)
    if args.three_way:
        estimate = type(estimate)(estimate.bytes * 2, estimate.seconds * 3)
    free = free_memory()
    if free is not None and estimate.bytes > free:
        big = [f"{flag} {getattr(args, name)}" for flag, name, default in SIZE_FLAGS
               if isinstance(getattr(args, name, None), int) and getattr(args, name) > default]
        big += [f"{flag} {getattr(args, name)}" for flag, name in (("--config", "config"), ("--adapter", "adapter"))
                if getattr(args, name, None)]  # the model's sizes came from a file or from the user's code
        what = " and ".join(big) or "this model"
        raise UsageError(f"scratchdiff report: error: {what} would need {estimate.describe()}, but only "
                         f"{human_bytes(free)} of memory is free here; use a smaller "
                         f"{' or '.join(b.split()[0] for b in big) or 'model'}")
    return estimate


def _run_report(args: argparse.Namespace) -> int:

    from differential.model_options import model_from_args
    from differential.report import ReportOptions

    with _bad_input("report"):
        if args.format == "html" and args.output is None:
            raise UsageError("scratchdiff report: error: --format html needs -o FILE")
        target = _check_writable(args.output) if args.output else None
        weights = None
        if args.weights is not None:
            from differential.weights import load_weights

            weights = load_weights(args.weights)
        model = model_from_args(args, num_layers=args.layers)
        adapter = None
        if args.adapter is not None:  # [adapter] the user's model is the implementation under test
            from differential.adapter import AdapterOptions, load_adapter, run_config

            if args.fault:
                raise UsageError("scratchdiff report: error: --adapter cannot be combined with --fault (it switches on "
                                 "a fault of this project's models)")
            adapter = _users_code(f"--adapter {args.adapter}", load_adapter, args.adapter,
                                  AdapterOptions(model, args.dtype, args.seed))
            model = run_config(adapter, model, args.layers)
        reference = None
        if args.reference is not None:  # the user's own torch model is the reference
            from differential.user_reference import load_reference

            if args.three_way:
                raise UsageError("scratchdiff report: error: --reference cannot be combined with --three-way")
            reference = _users_code(f"--reference {args.reference}", load_reference, args.reference)
        if args.first_only and args.isolated:
            raise UsageError("scratchdiff report: error: --first-only cannot be combined with --isolated (isolated "
                             "mode runs every module alone, and lists every finding)")
        options = ReportOptions(impl=args.impl, against=args.against, dtype=args.dtype, seed=args.seed,
                                batch_size=args.batch_size, model=model, isolated=args.isolated, steps=args.steps,
                                optimizer=args.optimizer, lr=args.lr, weights=weights, adapter=adapter,
                                findings=not args.first_only, reference=reference)
        if args.fault is not None:
            from differential import faults

            try:
                options = faults.get_fault(args.fault).options_for(options)
            except InputError as err:
                raise UsageError(f"scratchdiff report: error: {err}") from None
        if args.three_way and options.impl not in ("class", "functional", "adapter"):
            raise UsageError(f"scratchdiff report: error: --three-way needs --impl class or functional, or --adapter, "
                             f"got {options.impl!r}")
        if args.other is not None and not args.three_way:
            raise UsageError("scratchdiff report: error: --other names the second implementation of --three-way; "
                             "add --three-way")
        if args.three_way and args.other == options.impl:
            raise UsageError(f"scratchdiff report: error: --other {args.other} is the implementation under test; "
                             f"pick the other one")
        estimate = _report_estimate(args, options)
    return _report(args, options, target, estimate)


def _report(args: argparse.Namespace, options: Any, target: Path | None, estimate: Any) -> int:
    """Run the report (its input is checked) and print or write it."""
    from differential import faults
    from differential.formats import FORMATTERS, format_text, summary_line
    from differential.output import FILE_SCREEN, detect_screen, report_progress
    from differential.report import run_report, run_three_way

    with faults.activate(args.fault), report_progress(estimate, enabled=not args.three_way) as watch:
        report = run_three_way(options, args.other) if args.three_way else run_report(options, watch)
    if target is not None or not args.quiet:
        screen = FILE_SCREEN if target is not None else detect_screen()
        text = (format_text(report, screen.width, screen.color) if args.format == "text"
                else FORMATTERS[args.format](report))
        _emit(text, target)
    if args.quiet or target is not None:
        print(summary_line(report) + (f" (report: {args.output})" if target is not None else ""))
    return EXIT_OK if report.verdict == "match" else EXIT_DIVERGED


def _screen(target: Path | None) -> Any:
    from differential.output import FILE_SCREEN, detect_screen

    return FILE_SCREEN if target is not None else detect_screen()


def _emit(text: str, target: Path | None) -> None:
    if target is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    from differential.output import write_file

    write_file(target, text if text.endswith("\n") else text + "\n")


def _run_faults(args: argparse.Namespace) -> int:
    from differential import faults
    from differential.output import detect_screen
    from differential.tables import faults_table

    if args.format == "json":
        rows = [{"name": f.name, "description": f.description, "bug_class": f.bug_class, "impl": f.impl,
                 "module": f.module, "phase": f.phase, "kind": f.kind} for f in faults.FAULTS.values()]
        print(json.dumps(rows, indent=2))
    else:
        screen = detect_screen()
        print(faults_table(list(faults.FAULTS.values()), screen.width, screen.color))
    return EXIT_OK


def _run_zoo(args: argparse.Namespace) -> int:
    from differential import faults
    from differential.model_options import model_from_args
    from differential.render import progress_bar
    from differential.report import ReportOptions
    from differential.tables import zoo_table
    from differential.zoo import run_zoo

    target = _check_writable(args.output) if args.output else None
    if args.combos:
        return _run_combos(args, target)
    with _bad_input("zoo"):
        model = model_from_args(args)
    if args.matrix:
        return _run_matrix(args, target, model)
    names = args.fault or faults.names()
    with _bad_input("zoo"):
        for name in names:
            faults.get_fault(name)
    with progress_bar("fault zoo", total=len(names)) as advance:
        rows, clean = run_zoo(ReportOptions(seed=args.seed, model=model), names, train=args.train,
                              on_fault=lambda name: advance())
    ok = all(r.detected and r.localized for r in rows) and clean.verdict == "match"
    if args.format == "json":
        text = json.dumps({"faults": [r.to_dict() for r in rows], "clean_verdict": clean.verdict,
                           "all_detected_and_localized": ok}, indent=2, sort_keys=True)
    else:
        screen = _screen(target)
        text = zoo_table(rows, clean.verdict, screen.width, screen.color)
    _emit(text, target)
    return EXIT_OK if ok else EXIT_DIVERGED


def _run_matrix(args: argparse.Namespace, target: Path | None, model: Any) -> int:
    """`zoo --matrix`: every fault in every architecture variant where its code runs."""
    from differential import zoo
    from differential.render import progress_bar
    from differential.report import ReportOptions

    if args.train or args.combos:
        raise UsageError("scratchdiff zoo: error: --matrix cannot be combined with --train or --combos")
    cells = zoo.matrix_cells(args.fault)
    with progress_bar("fault x variant matrix", total=len(cells)) as advance:
        matrix = zoo.run_matrix(ReportOptions(seed=args.seed, model=model), cells, on_cell=lambda *_: advance())
    text = json.dumps(matrix.to_dict(), indent=2, sort_keys=True) if args.format == "json" else matrix.text()
    _emit(text, target)
    return EXIT_OK if matrix.all_localized else EXIT_DIVERGED


def _run_combos(args: argparse.Namespace, target: Path | None) -> int:
    """`zoo --combos`: several faults at once; every one of them must be among the findings."""
    from differential import zoo
    from differential.render import progress_bar
    from differential.report import ReportOptions
    from differential.tables import combos_table

    if args.train or args.fault:
        raise UsageError("scratchdiff zoo: error: --combos cannot be combined with --train or --fault")
    from differential.model_options import model_from_args

    with _bad_input("zoo"):
        model = model_from_args(args)
    with progress_bar("fault combinations", total=None) as advance:
        rows = zoo.run_combos(ReportOptions(seed=args.seed, model=model), on_combo=lambda *_: advance())
    ok = all(r.all_found for r in rows)
    if args.format == "json":
        text = json.dumps({"combos": [r.to_dict() for r in rows], "all_found": ok}, indent=2, sort_keys=True)
    else:
        screen = _screen(target)
        text = combos_table(rows, screen.width, screen.color)
    _emit(text, target)
    return EXIT_OK if ok else EXIT_DIVERGED


def _run_train(args: argparse.Namespace) -> int:
    from differential.model_options import model_from_args
    from differential.output import detect_screen
    from differential.render import progress_bar
    from differential.tables import train_table

    lr = args.lr if args.lr is not None or args.optimizer != "sgd" else SGD_DEFAULT_LR
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", lr), ("task", args.task),
                                   ("batch_size", args.batch_size), ("optimizer", args.optimizer))
                 if v is not None}
    with _bad_input("train"):
        plan = training.TrainPlan(impl=args.impl, seed=args.seed, dtype=args.dtype, overrides=overrides,
                                  model=model_from_args(args))
    with progress_bar(f"training {args.impl}", total=plan.total_steps(), enabled=not args.json) as advance:
        result = training.run(plan, on_step=lambda step, loss: advance(loss))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        screen = detect_screen()
        print(train_table(result, screen.width, screen.color))
    return EXIT_OK


def _list_of(convert: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """An argparse type for a comma-separated list, e.g. ``--lr 0.001,0.003``."""
    def parse(text: str) -> list:
        values = []
        for item in text.split(","):
            try:
                values.append(convert(item.strip()))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {item.strip()!r} "
                                                 f"in {text!r}") from None
        return values
    return parse


def _add_sweep_parser(commands: Any) -> None:
    from differential.sweep import BACKENDS, Grid

    d = Grid()

    def default(values: tuple) -> str:
        return ",".join(f"{v:g}" for v in values)

    sweep = commands.add_parser(
        "sweep", help="train over a grid of settings: a hyperparameter problem or a bug?",
        description="Train every combination of the listed settings (lists are comma-separated) in parallel "
                    "worker processes through joblib, then write sweep.csv, sweep.json and sweep.png (accuracy "
                    "heatmaps) to --out, print the best settings, the share of runs reaching 95% exact-sequence "
                    "accuracy and a verdict: it learns in N of M settings; it is still improving (accuracy "
                    "rising with epochs, loss falling: train longer); it fails everywhere although the loss "
                    "falls (look for a bug with `scratchdiff report`); or every run crashed (with the error). "
                    "When no setting learns and the grid has one budget, the best three settings are trained "
                    "again on half of it to see the trend. Every setting is checked before any run starts. An "
                    "epoch is one pass over the sweep's own training set of --num-train sequences (default 128, "
                    "not the 6000 of `train`), so that the default grid (the original plan's: 72 runs of 50 and "
                    "100 epochs) takes minutes on two cores. A run that crashes is recorded as failed; Ctrl-C "
                    "writes the finished runs, marked as interrupted. Exit 0: some setting reaches 95%; 1: none "
                    "does; 2: bad input; 130: interrupted.")
    sweep.add_argument("--impl", choices=training.IMPLEMENTATIONS, default="class",
                       help="which implementation to train (default: class)")
    sweep.add_argument("--fault", metavar="NAME", default=None,
                       help="switch on one fault of the catalogue (see `scratchdiff faults`) in every run")
    sweep.add_argument("--lr", type=_list_of(positive_float, "positive numbers"), default=list(d.lr),
                       metavar="LIST", help=f"learning rates (default: {default(d.lr)})")
    budget = sweep.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_list_of(_positive_int, "positive integers"), default=None,
                        metavar="LIST", help=f"passes over the --num-train training sequences "
                                             f"(default: {default(d.epochs)})")
    budget.add_argument("--steps", type=_list_of(_positive_int, "positive integers"), default=None,
                        metavar="LIST", help="optimizer steps instead of epochs; each must be a whole number of "
                                             "epochs (ceil(num_train / batch_size) steps each)")
    sweep.add_argument("--embed-dim", type=_list_of(_positive_int, "positive integers"), default=list(d.embed_dim),
                       metavar="LIST", help=f"embedding widths; the feed-forward width stays 64 "
                                            f"(default: {default(d.embed_dim)})")
    sweep.add_argument("--heads", type=_list_of(_positive_int, "positive integers"), default=list(d.num_heads),
                       metavar="LIST", help=f"attention heads; each must divide every --embed-dim, checked before "
                                            f"any run starts (default: {default(d.num_heads)})")
    sweep.add_argument("--layers", type=_list_of(_positive_int, "positive integers"), default=list(d.num_layers),
                       metavar="LIST", help=f"transformer blocks (default: {default(d.num_layers)})")
    sweep.add_argument("--batch-size", type=_list_of(_positive_int, "positive integers"),
                       default=list(d.batch_size), metavar="LIST",
                       help=f"batch sizes (default: {default(d.batch_size)})")
    sweep.add_argument("--seed", type=_list_of(_seed, f"seeds from 0 to {2**32 - 1}"), default=list(d.seed),
                       metavar="LIST",
                       help=f"seeds for weights and data; the plot averages over them (default: {default(d.seed)})")
    sweep.add_argument("--num-train", type=_positive_int, default=128, metavar="N",
                       help="training sequences; one epoch is one pass over them (default: 128)")
    sweep.add_argument("--num-test", type=_positive_int, default=1000, metavar="N",
                       help="held-out test sequences the accuracies are measured on (default: 1000)")
    sweep.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="floating-point precision (default: float64)")
    sweep.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                       help=f"runs trained at once (default: {os.cpu_count() or 1}, the CPU cores here)")
    sweep.add_argument("--backend", choices=BACKENDS, default="loky",
                       help="joblib backend: loky (worker processes, default), multiprocessing, threading (torch "
                            "only), dask (a Dask cluster: needs dask, distributed and --scheduler) or ray "
                            "(a Ray cluster: needs ray)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="the Dask scheduler to send runs to, e.g. tcp://10.0.0.5:8786 (--backend dask only)")
    sweep.add_argument("--out", metavar="DIR", default="sweep-results",
                       help="folder for sweep.csv, sweep.json and sweep.png (default: sweep-results)")
    from differential.model_options import add_model_flags

    add_model_flags(sweep)  # the grid's --embed-dim, --heads and --layers override the sizes of --config


def _run_sweep(args: argparse.Namespace) -> int:
    from differential import sweep
    from differential.model_options import model_from_args
    from differential.render import progress_bar

    if (args.backend == "dask") != (args.scheduler is not None):
        raise UsageError("scratchdiff sweep: error: --backend dask needs --scheduler ADDRESS, and --scheduler "
                         "needs --backend dask")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"scratchdiff sweep: error: --out {args.out!r} is a file, not a folder")
    with _bad_input("sweep"):  # every setting is checked here, before any run starts
        grid = sweep.Grid(lr=tuple(args.lr), epochs=None if args.steps else tuple(args.epochs or sweep.Grid().epochs),
                          steps=tuple(args.steps) if args.steps else None, embed_dim=tuple(args.embed_dim),
                          num_heads=tuple(args.heads), num_layers=tuple(args.layers),
                          batch_size=tuple(args.batch_size), seed=tuple(args.seed))
        plan = sweep.SweepPlan(grid, impl=args.impl, fault=args.fault, num_train=args.num_train,
                               num_test=args.num_test, dtype=args.dtype, model=model_from_args(args))
        sweep.check_backend(plan, args.workers, args.backend)
        if args.scheduler:
            sweep.reach_scheduler(args.scheduler)
    options = {"scheduler_host": args.scheduler} if args.scheduler else {}
    label = f"sweep {args.impl}" + (f" + {args.fault}" if args.fault else "")
    with progress_bar(label, total=len(plan.runs())) as advance:
        result = sweep.run_sweep(plan, workers=args.workers, backend=args.backend, backend_options=options,
                                 on_result=lambda row: advance(row["loss"]))
    paths = sweep.write_results(result, out)
    print(sweep.summary_text(result))
    print(f"results: {', '.join(str(p) for p in paths)}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if sweep.share_learned(result.rows) > 0 else EXIT_DIVERGED


def _run_repro(args: argparse.Namespace) -> int:
    from differential.repro_cli import run

    return run(args)


COMMANDS = {"train": "_run_train", "report": "_run_report", "faults": "_run_faults", "zoo": "_run_zoo",
            "sweep": "_run_sweep", "repro": "_run_repro"}


def _freeze_imports() -> None:
    """Import torch and move everything imported so far out of the collector's way (gc.freeze): a
    full collection then walks only what the runs make, not torch's hundreds of thousands of
    objects (about 170 ms each on the reference machine, every few reports in a zoo). Once per
    process: a program calling `main` again keeps collecting what its earlier runs left."""
    import gc

    import torch  # noqa: F401 - imported here so that its objects are frozen with the rest

    if gc.get_freeze_count() == 0:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point: run one command and return its exit code (see the module's docstring)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while an error below is being reported
        _say("scratchdiff: interrupted")
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    global training
    command = "scratchdiff"
    try:
        from differential import training

        args = build_parser().parse_args(argv)
        command = f"scratchdiff {args.command}"
        _check_thread_setting(command)
        if args.command != "faults":
            _freeze_imports()
        return globals()[COMMANDS[args.command]](args)
    except UsageError as err:
        _say(str(err))
        return EXIT_USAGE
    except InputError as err:
        _say(f"{command}: error: {one_line(err)}")
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `scratchdiff report | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
        return EXIT_OK
    except KeyboardInterrupt:
        _say("scratchdiff: interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - anything else is scratchdiff's own bug, unless the user's code raised it
        theirs = users_frame(err)
        if theirs is not None:
            _say(f"{command}: error: your code raised {type(err).__name__}: {one_line(err)[:200]} (at {theirs})")
            return EXIT_USAGE
        where = save_traceback(argv)
        _say(f"{command}: internal error ({type(err).__name__}: {one_line(err)[:200]}): this is a bug in "
             f"scratchdiff, not in your input; " + (f"the traceback is in {where}" if where else
                                                    "the traceback could not be saved"))
        return EXIT_BUG


def _check_thread_setting(command: str) -> None:
    """SCRATCHDIFF_THREADS (threads for numpy's BLAS and torch, one by default) is read where
    threads are pinned; a bad value is the user's, so say it here, as one line."""
    from scratch_model.threads import default_threads

    try:
        default_threads()
    except ValueError as err:
        raise UsageError(f"{command}: error: {err}") from err


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
