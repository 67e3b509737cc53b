"""Both scratch implementations (and, with --torch, the reference) trained with the default
settings: held-out exact-sequence and per-token accuracy, and training time.

    .venv/bin/python benchmarks/train_accuracy.py [--seed 0] [--torch]
"""

from __future__ import annotations

import argparse

from differential import training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch", action="store_true", help="also train the torch reference")
    args = parser.parse_args()
    impls = ["class", "functional"] + (["torch"] if args.torch else [])
    for impl in impls:
        result = training.run(training.TrainPlan(impl=impl, seed=args.seed))
        print(f"{impl:10s} exact-sequence {result['exact_match']:.2%}  per-token {result['token_accuracy']:.2%}  "
              f"test loss {result['loss']:.5f}  training {result['seconds']:.2f} s ({result['steps']} steps, "
              f"{result['epochs']} epochs)")


if __name__ == "__main__":
    main()
