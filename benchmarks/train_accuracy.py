"""Both scratch implementations (and, with --torch, the reference) trained with the default
settings in every architecture variant: held-out exact-sequence and per-token accuracy, the task
(reverse, or mirror for a causal model) and training time. Prints one line per run and, last,
the variants where a run stayed under --target.

    .venv/bin/python benchmarks/train_accuracy.py [--seed 0] [--torch] [--variants seed,gpt] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys

from differential import training
from scratch_model.config import VARIANTS, variant

# A model with no positions and no mask treats its input as a set: it cannot tell where a token
# stands, so it cannot reverse (every output position sees the same thing). Not trained.
UNLEARNABLE = {"no_positions": "no positions and no mask: every position sees the same set of tokens"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch", action="store_true", help="also train the torch reference")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated names from scratch_model.config.VARIANTS (default: all: "
                             f"{', '.join(VARIANTS)})")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: TrainConfig's, 5)")
    parser.add_argument("--target", type=float, default=0.99, help="exact-sequence accuracy to reach (0.99)")
    args = parser.parse_args()
    impls = ["class", "functional"] + (["torch"] if args.torch else [])
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    short = []
    for name in args.variants.split(","):
        if name in UNLEARNABLE:
            print(f"{name:24s} skipped: {UNLEARNABLE[name]}")
            continue
        for impl in impls:
            result = training.run(training.TrainPlan(impl=impl, seed=args.seed, model=variant(name),
                                                     overrides=overrides))
            print(f"{name:24s} {impl:10s} task {result['task']:7s} exact-sequence {result['exact_match']:7.2%}  "
                  f"per-token {result['token_accuracy']:7.2%}  test loss {result['loss']:.5f}  "
                  f"training {result['seconds']:6.2f} s ({result['steps']} steps)", flush=True)
            if result["exact_match"] < args.target:
                short.append(f"{name} {impl}")
    print(f"under {args.target:.0%}: {', '.join(short) if short else 'none'}")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
