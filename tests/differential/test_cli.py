"""The command line: exit codes, one-line errors, stable JSON, self-contained HTML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from differential.cli import main
from differential.report import initial_weights
from differential.weights import save_weights
from scratch_model.config import TransformerConfig

JSON_KEYS = {"verdict", "first_divergence", "modules", "gradient_flow", "weight_update", "data", "loss",
             "training", "options", "schema_version"}
DIVERGENCE_KEYS = {"module", "phase", "kind", "hint", "scratch_source", "reference_source", "metrics"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_report_exits_0_with_the_documented_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "report", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert JSON_KEYS <= report.keys()
    assert report["verdict"] == "match" and report["first_divergence"] is None
    assert [m["module"] for m in report["modules"]][:3] == ["", "embedding", "pos_embedding"]  # paths: root ""
    assert report["modules"][0]["module_display"] == "(model)"
    assert all(m[p]["status"] != "diverged" for m in report["modules"] for p in ("forward", "backward"))


def test_divergence_exits_1_and_names_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "report", "--fault", "attention_no_scale", "--format", "json")
    assert code == 1
    first = json.loads(out)["first_divergence"]
    assert DIVERGENCE_KEYS <= first.keys()
    assert (first["module"], first["phase"]) == ("blocks.0.attn", "forward")
    path, _, line = first["scratch_source"].rpartition(":")
    assert Path(path).name == "class_model.py" and line.isdigit()


def test_json_is_byte_identical_across_runs(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = [run(capsys, "report", "--format", "json", "--steps", "2", "--seed", "3")[1] for _ in range(2)]
    assert outputs[0] == outputs[1]
    json.loads(outputs[0])  # strict JSON: no NaN tokens


def test_html_is_self_contained_and_written_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.html"
    code, _, _ = run(capsys, "report", "--format", "html", "-o", str(target), "--steps", "3")
    assert code == 0
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("argv, words", [
    (["report", "--batch-size", "0"], "--batch-size"),
    (["report", "--dtype", "float16"], "float16"),
    (["report", "--impl", "class", "--against", "class"], "both 'class'"),
    (["report", "--fault", "no_such_fault"], "no_such_fault"),
    (["report", "--format", "html"], "needs -o"),
    (["report", "-o", "/no/such/folder/report.txt"], "/no/such/folder"),
    (["report", "--weights", "weights.bin"], "weights.bin"),
    (["train", "--epochs", "-1"], "-1"),
    (["train", "--lr", "fast"], "fast"),
    (["zoo", "--fault", "no_such_fault"], "no_such_fault"),
])
def test_bad_input_gives_one_line_and_exit_2(argv: list[str], words: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and words in err


def test_nan_and_wrong_shape_weights_are_listed_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = initial_weights(TransformerConfig(), 0)
    weights["head.bias"] = np.full_like(weights["head.bias"], np.nan)
    weights["embedding.weight"] = weights["embedding.weight"][:, :16].copy()
    path = tmp_path / "broken.npz"
    save_weights(path, weights)
    code, out, err = run(capsys, "report", "--weights", str(path))
    assert code == 2 and out == ""
    assert "head.bias" in err and "embedding.weight" in err and len(err.strip().splitlines()) == 1


def test_report_from_a_weights_file_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, initial_weights(TransformerConfig(), 5))
    assert run(capsys, "report", "--weights", str(path))[0] == 0


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--impl", "--against", "--dtype", "--seed", "--batch-size", "--layers", "--isolated", "--steps",
                 "--format", "--output", "--three-way", "--fault", "--first-only"):
        assert flag in text
    assert "teacher forcing" in " ".join(text.split())  # what --first-only skips


def test_zoo_help_explains_combos(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--combos" in text and "every one of them" in text


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("scratchdiff")
    result = subprocess.run([str(exe), "faults"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "residual_from_data" in result.stdout
