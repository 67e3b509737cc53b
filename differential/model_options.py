"""The architecture flags shared by `report`, `train`, `zoo` and `sweep`: a preset (``--arch``), a
file (``--config``, JSON or TOML) and one flag per architecture field of
`scratch_model.config.TransformerConfig`. Later sources win: preset, then file, then flags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from differential.errors import InputError
from scratch_model.config import ARCHS, CHOICES, TransformerConfig, arch, config_from_mapping

# flag -> (config field, what it does); the choices come from the config itself
_CHOICE_FLAGS = {
    "--norm": ("norm", "where each block's LayerNorms sit: post, x = ln(x + f(x)) (the seed model); "
                       "pre, x = x + f(ln(x)) (GPT)"),
    "--activation": ("activation", "the feed-forward activation: relu (seed), gelu (exact, with erf) or "
                                   "gelu_tanh (the tanh approximation, GPT-2)"),
    "--mask": ("mask", "the attention mask: none (seed) or causal (query i sees keys 0..i; GPT)"),
    "--positions": ("positional", "positions added to the embedded tokens: learned (a parameter table, "
                                  "seed), sinusoidal (fixed sin/cos) or none"),
}
_SWITCH_FLAGS = {
    "--final-norm": ("final_norm", "a final LayerNorm ln_f before the head (seed: off; GPT: on)"),
    "--bias": ("bias", "biases on every Linear layer (seed: on); --no-bias: none, so no *.bias of a Linear"),
    "--tie-head": ("tie_head", "the head reuses the token embedding's weight, so there is no head.weight "
                               "(seed: off; GPT: on)"),
}


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_step_flags(parser: argparse.ArgumentParser, used_for: str) -> None:
    """``--optimizer`` and ``--lr`` of a report (``used_for``: the checks they drive, for --help)."""
    from differential.options import ReportOptions

    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=ReportOptions.optimizer,
                        help=f"optimizer {used_for} (default: {ReportOptions.optimizer})")
    parser.add_argument("--lr", type=positive_float, default=ReportOptions.lr,
                        help=f"learning rate (default: {ReportOptions.lr:g})")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--arch``, ``--config`` and one flag per architecture field to ``parser``."""
    group = parser.add_argument_group(
        "architecture", "the model's architecture: a preset, then a file, then single fields (each overrides "
                        "the one before; a flag that is not given keeps the preset's or the file's value)")
    group.add_argument("--arch", choices=tuple(ARCHS), default=None,
                       help="a named architecture: seed (the default: post-LN, ReLU, no mask, learned positions, "
                            "separate head, biases) or gpt (pre-LN, final LayerNorm, GELU tanh, causal mask, head "
                            "tied to the embedding, learned positions)")
    group.add_argument("--config", metavar="FILE", default=None,
                       help="model settings from a .json or .toml file: any TransformerConfig field (sizes too, "
                            "e.g. embed_dim, num_heads, num_layers) and optionally arch; at the top level or "
                            "under a [model] table")
    for flag, (name, text) in _CHOICE_FLAGS.items():
        group.add_argument(flag, dest=f"model_{name}", choices=CHOICES[name], default=None, help=text)
    for flag, (name, text) in _SWITCH_FLAGS.items():
        group.add_argument(flag, dest=f"model_{name}", action=argparse.BooleanOptionalAction, default=None, help=text)
    group.add_argument("--ln-eps", dest="model_ln_eps", type=positive_float, default=None, metavar="EPS",
                       help="LayerNorm's epsilon (default: 1e-5)")


def read_config_file(path: str) -> dict[str, Any]:
    """The settings in a JSON or TOML file (a ``model`` table if there is one, else the top level)."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise InputError(f"--config {path!r}: expected a .json or .toml file")
    try:
        text = file.read_text()
    except OSError as err:
        raise InputError(f"--config {path!r}: cannot read it ({err.strerror or err})") from None
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise InputError(f"--config {path!r}: TOML needs Python 3.11 or later; use JSON") from None
            data = tomllib.loads(text)
    except (json.JSONDecodeError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"--config {path!r}: not valid {suffix[1:].upper()} ({err})") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise InputError(f"--config {path!r}: expected a table of settings, got a {type(data).__name__}")
    return data


def model_from_args(args: argparse.Namespace, base: TransformerConfig | None = None,
                    num_layers: int | None = None) -> TransformerConfig:
    """The architecture the flags in ``args`` ask for: ``base`` (default: the seed model), or the
    ``--arch`` preset, then ``--config``, then the single flags and ``num_layers`` (when given)."""
    config = base or TransformerConfig()
    if getattr(args, "arch", None) is not None:
        config = arch(args.arch)
    if getattr(args, "config", None) is not None:
        config = config_from_mapping(read_config_file(args.config), config, source=f"--config {args.config!r}")
    fields = {name: getattr(args, f"model_{name}") for name, _ in [*_CHOICE_FLAGS.values(), *_SWITCH_FLAGS.values()]}
    fields["ln_eps"] = getattr(args, "model_ln_eps", None)
    if num_layers is not None:
        fields["num_layers"] = num_layers
    try:
        return config_from_mapping({k: v for k, v in fields.items() if v is not None}, config, source="flags")
    except ValueError as err:
        raise InputError(str(err)) from None
