"""The `scratchdiff` command line: parses flags, dispatches, prints. User errors exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from differential import training

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE = 0, 1, 2


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scratchdiff", description=(
        "Check a from-scratch numpy transformer against PyTorch, module by module."))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train on sequence reversal and print test accuracy",
                                description="Train one implementation on sequence reversal; report "
                                            "exact-sequence and per-token accuracy on held-out sequences.")
    train.add_argument("--impl", choices=training.IMPLEMENTATIONS, default="class",
                       help="which implementation to train (default: class)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="passes over the training set (default: 5)")
    train.add_argument("--seed", type=_int, default=0, help="seed for weights and data (default: 0)")
    train.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: 3e-3)")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 64)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                       help="optimizer (default: adam; sgd uses momentum 0.9)")
    train.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="floating-point precision (default: float64)")
    train.add_argument("--json", action="store_true",
                       help="print one JSON object (exact_match, token_accuracy, loss, seconds, ...) "
                            "instead of a table")
    report = commands.add_parser(
        "report", help="compare a scratch model with the reference, module by module",
        description="Run the implementation under test and the reference on one seeded batch with "
                    "shared weights; report the first module whose forward output or gradient diverges, "
                    "with its phase, kind, source lines and a hint. Exit 0: everything matches; "
                    "1: a divergence; 2: bad input.")
    report.add_argument("--impl", choices=training.IMPLEMENTATIONS, default="class",
                        help="the implementation under test (default: class)")
    report.add_argument("--against", choices=training.IMPLEMENTATIONS, default="torch",
                        help="the reference to compare with; it always runs in float64 as the oracle "
                             "(default: torch)")
    report.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision of the implementation under test; float32 is judged against the "
                             "float64 reference with a noise floor from the reference's own float32 run "
                             "(default: float64)")
    report.add_argument("--seed", type=_int, default=0, help="seed for the weights and the batch (default: 0)")
    report.add_argument("--batch-size", type=_positive_int, default=16, help="sequences in the batch (default: 16)")
    report.add_argument("--layers", type=_positive_int, default=1, help="transformer blocks (default: 1)")
    report.add_argument("--isolated", action="store_true",
                        help="also run every module alone on the reference's inputs and output gradient, "
                             "so every broken module shows, not only the first")
    report.add_argument("--steps", type=_non_negative_int, default=0,
                        help="train both side by side for N steps on the same batches and report the first "
                             "step where the loss or a parameter diverges (default: 0, skip)")
    report.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="optimizer for the optimizer-step and training checks (default: adam)")
    report.add_argument("--lr", type=_positive_float, default=3e-3, help="learning rate (default: 3e-3)")
    report.add_argument("--weights", metavar="FILE", default=None,
                        help="start from these weights (.npz or .safetensors, names as in the model) "
                             "instead of the seeded initial ones")
    report.add_argument("--three-way", action="store_true",
                        help="class vs torch, functional vs torch and class vs functional together: where the "
                             "two scratch implementations disagree, show both source locations and which one "
                             "to port the fix from")
    report.add_argument("--fault", metavar="NAME", default=None,
                        help="switch on one fault of the catalogue (see `scratchdiff faults`) and report on it")
    report.add_argument("--adapter", metavar="MODULE:OBJECT", default=None,  # [adapter]
                        help="report on your own model instead of --impl: an Adapter instance or a zero-argument "
                             "factory, imported by module path from the current directory (see docs/adapter.md)")
    report.add_argument("--mask", choices=("none", "causal"), default=None,
                        help="attention mask for the batch (default: none; a fault may ask for causal)")
    report.add_argument("--format", choices=("text", "json", "html"), default="text",
                        help="text (terminal), json (stable schema, identical bytes for identical runs) or "
                             "html (self-contained, with plots; needs -o) (default: text)")
    report.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write the report to FILE instead of standard output")
    faults_cmd = commands.add_parser("faults", help="list the fault catalogue",
                                     description="List every fault of the catalogue: name, bug class, the "
                                                 "implementation it breaks, and where the report must localize it.")
    faults_cmd.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")

    zoo = commands.add_parser("zoo", help="run the report on every fault and print the detection matrix",
                              description="Run the report with each fault of the catalogue switched on, one at a "
                                          "time; print whether each was detected, localized (module and phase) "
                                          "and given the right kind, beside what the naive checks say. Exit 0 "
                                          "only when every fault is detected and localized and the clean model "
                                          "matches.")
    zoo.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    zoo.add_argument("--train", action="store_true",
                     help="also train with each fault on (standard budget) and show test accuracy (slow)")
    zoo.add_argument("--fault", metavar="NAME", action="append", default=None,
                     help="run only this fault (repeatable)")
    zoo.add_argument("--seed", type=_int, default=0, help="seed for weights and batch (default: 0)")
    zoo.add_argument("-o", "--output", metavar="FILE", default=None, help="write the matrix to FILE")
    return parser


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value}")
    return value


def _check_writable(path: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"scratchdiff report: error: output path {path!r} is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"scratchdiff report: error: cannot write {path!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"scratchdiff report: error: cannot write {path!r}: permission denied")
    return target


def _run_report(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from differential.formats import FORMATTERS
    from differential.report import ReportOptions, run_report, run_three_way
    from scratch_model.config import TransformerConfig

    if args.format == "html" and args.output is None:
        raise UsageError("scratchdiff report: error: --format html needs -o FILE")
    target = _check_writable(args.output) if args.output else None
    weights = None
    if args.weights is not None:
        from differential.weights import load_weights

        weights = load_weights(args.weights)
    model = replace(TransformerConfig(), num_layers=args.layers)
    adapter = None
    if args.adapter is not None:  # [adapter] the user's model is the implementation under test
        from differential.adapter import load_adapter

        if args.three_way or args.fault:
            raise UsageError("scratchdiff report: error: --adapter cannot be combined with --three-way or --fault")
        adapter = load_adapter(args.adapter)
        model = adapter.config or model
    options = ReportOptions(impl=args.impl, against=args.against, dtype=args.dtype, seed=args.seed,
                            batch_size=args.batch_size, model=model, isolated=args.isolated, steps=args.steps,
                            optimizer=args.optimizer, lr=args.lr, weights=weights, adapter=adapter)
    if args.fault is not None:
        from differential import faults

        fault = faults.get_fault(args.fault)
        if not fault.applies_to(args.impl):
            raise UsageError(f"scratchdiff report: error: fault {args.fault!r} lives in the {fault.impl} "
                             f"implementation; add --impl {fault.impl}")
        options = replace(options, **fault.report)
    if args.mask is not None:
        options = replace(options, mask=args.mask)
    from differential import faults

    with faults.activate(args.fault):
        report = run_three_way(options) if args.three_way else run_report(options)
    _emit(FORMATTERS[args.format](report), target)
    return EXIT_OK if report.verdict == "match" else EXIT_DIVERGED


def _emit(text: str, target: Path | None) -> None:
    if target is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    temporary = target.with_name(f".{target.name}.partial")
    temporary.write_text(text)
    temporary.replace(target)  # all or nothing: never a half-written file


def _run_faults(args: argparse.Namespace) -> int:
    from differential import faults
    from differential.render import faults_table

    if args.format == "json":
        rows = [{"name": f.name, "description": f.description, "bug_class": f.bug_class, "impl": f.impl,
                 "module": f.module, "phase": f.phase, "kind": f.kind} for f in faults.FAULTS.values()]
        print(json.dumps(rows, indent=2))
    else:
        print(faults_table(list(faults.FAULTS.values())))
    return EXIT_OK


def _run_zoo(args: argparse.Namespace) -> int:
    from differential import faults
    from differential.render import progress_bar, zoo_table
    from differential.report import ReportOptions
    from differential.zoo import run_zoo

    target = _check_writable(args.output) if args.output else None
    names = args.fault or faults.names()
    for name in names:
        faults.get_fault(name)
    with progress_bar("fault zoo", total=len(names)) as advance:
        rows, clean = run_zoo(ReportOptions(seed=args.seed), names, train=args.train,
                              on_fault=lambda name: advance())
    ok = all(r.detected and r.localized for r in rows) and clean.verdict == "match"
    if args.format == "json":
        text = json.dumps({"faults": [r.to_dict() for r in rows], "clean_verdict": clean.verdict,
                           "all_detected_and_localized": ok}, indent=2, sort_keys=True)
    else:
        text = zoo_table(rows, clean.verdict)
    _emit(text, target)
    return EXIT_OK if ok else EXIT_DIVERGED


def _run_train(args: argparse.Namespace) -> int:
    from differential.render import progress_bar, train_table

    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                   ("batch_size", args.batch_size), ("optimizer", args.optimizer))
                 if v is not None}
    plan = training.TrainPlan(impl=args.impl, seed=args.seed, dtype=args.dtype, overrides=overrides)
    with progress_bar(f"training {args.impl}", total=plan.total_steps(), enabled=not args.json) as advance:
        result = training.run(plan, on_step=lambda step, loss: advance(loss))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(train_table(result))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            return _run_train(args)
        if args.command == "report":
            return _run_report(args)
        if args.command == "faults":
            return _run_faults(args)
        if args.command == "zoo":
            return _run_zoo(args)
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, OSError) as err:
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"scratchdiff: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `scratchdiff report | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("scratchdiff: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
