"""The architecture flags of report, train, zoo and sweep: presets, --config files (JSON and TOML),
single-field flags, their order of precedence, and bad input (exit 2, one line)."""

from __future__ import annotations

import json

import pytest

from differential.cli import build_parser, main
from differential.model_options import model_from_args
from scratch_model.config import TransformerConfig, arch

COMMANDS = ("report", "train", "zoo", "sweep")
FLAGS = ("--arch", "--config", "--norm", "--final-norm", "--no-final-norm", "--activation", "--mask", "--bias",
         "--no-bias", "--ln-eps", "--tie-head", "--no-tie-head", "--positions")


def parse(*argv: str):
    from differential import cli, training

    cli.training = training  # main() sets it; the parser reads the implementations from it
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_every_flag_with_help(command: str) -> None:
    from differential import cli, training

    cli.training = training
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001 - argparse keeps them there
    text = sub.format_help()
    for flag in FLAGS:
        assert flag in text, f"{command} --help lacks {flag}"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_flag_is_the_seed_model(command: str) -> None:
    assert model_from_args(parse(command)) == TransformerConfig()


def test_flags_override_the_file_which_overrides_the_preset(tmp_path) -> None:
    toml = tmp_path / "model.toml"
    toml.write_text('[model]\narch = "gpt"\nbias = false\nembed_dim = 48\nnum_heads = 3\n')
    got = model_from_args(parse("report", "--arch", "seed", "--config", str(toml), "--activation", "gelu",
                                "--no-tie-head", "--ln-eps", "1e-6"))
    assert got == arch("gpt", bias=False, embed_dim=48, num_heads=3, activation="gelu", tie_head=False, ln_eps=1e-6)
    js = tmp_path / "model.json"
    js.write_text(json.dumps({"norm": "pre", "final_norm": True, "positional": "none"}))
    got = model_from_args(parse("train", "--arch", "gpt", "--config", str(js)))
    assert got == arch("gpt", positional="none")
    assert model_from_args(parse("zoo", "--arch", "gpt", "--mask", "none", "--positions", "sinusoidal")) == \
        arch("gpt", mask="none", positional="sinusoidal")
    assert model_from_args(parse("sweep", "--no-bias", "--final-norm")) == TransformerConfig(bias=False,
                                                                                            final_norm=True)


def test_report_layers_flag_beats_the_file_only_when_given(tmp_path) -> None:
    js = tmp_path / "m.json"
    js.write_text('{"num_layers": 3}')
    assert model_from_args(parse("report", "--config", str(js)), num_layers=None).num_layers == 3
    assert model_from_args(parse("report", "--config", str(js)), num_layers=2).num_layers == 2


BAD = [
    (["--config", "{dir}/missing.toml"], "cannot read it"),
    (["--config", "{dir}/m.yaml"], "expected a .json or .toml file"),
    (["--config", "{dir}/broken.json"], "not valid JSON"),
    (["--config", "{dir}/broken.toml"], "not valid TOML"),
    (["--config", "{dir}/list.json"], "expected a table of settings"),
    (["--config", "{dir}/unknown.json"], "unknown model setting 'heads'"),
    (["--config", "{dir}/badvalue.json"], "norm must be one of post, pre, got 'middle'"),
    (["--activation", "swish"], "invalid choice: 'swish'"),
    (["--ln-eps", "0"], "expected a positive number, got 0"),
    (["--arch", "bert"], "invalid choice: 'bert'"),
]


@pytest.mark.parametrize(("argv", "says"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_architecture_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says) -> None:
    (tmp_path / "m.yaml").write_text("norm: pre")
    (tmp_path / "broken.json").write_text("{norm: pre")
    (tmp_path / "broken.toml").write_text("norm = ")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "unknown.json").write_text('{"heads": 2}')
    (tmp_path / "badvalue.json").write_text('{"norm": "middle"}')
    code = main(["report", *[a.format(dir=tmp_path) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert says in err and "\n" not in err, err


def test_report_on_the_gpt_preset_matches_and_says_so(capsys) -> None:
    assert main(["report", "--arch", "gpt", "--layers", "2", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "match"
    assert report["options"]["model"] == {**TransformerConfig().to_dict(), **arch("gpt").to_dict(), "num_layers": 2}
    assert report["options"]["mask"] == "causal"
    names = [row["parameter"] for row in report["gradient_flow"]]
    assert "head.weight" not in names and "ln_f.weight" in names


def test_a_mask_fault_is_seen_under_the_causal_preset(capsys) -> None:
    assert main(["report", "--arch", "gpt", "--fault", "causal_mask_transposed", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    first = report["first_divergence"]
    assert (first["module"], first["phase"]) == ("blocks.0.attn", "forward")


def test_train_honours_the_architecture(capsys) -> None:
    assert main(["train", "--arch", "gpt", "--epochs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "mirror" and 0.0 <= result["exact_match"] <= 1.0
