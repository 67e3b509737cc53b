"""The `scratchdiff` command line: parses flags, dispatches, prints. User errors exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
    return parser


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
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as err:
        print(f"scratchdiff: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scratchdiff: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
