"""Mistakes a newcomer makes in an adapter are named as such, in one line, instead of showing up as an
internal error, a false finding or a silent "match": each is the bundled adapters with one thing
done wrong."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from differential import faults
from differential.adapter import Adapter, AdapterOptions
from differential.bundled_adapters import ClassModelAdapter, FunctionalModelAdapter
from differential.errors import InputError
from differential.report import ReportOptions, run_report

ROOT = Path(__file__).resolve().parents[2]
MODEL = ReportOptions().model


def _report(adapter: Adapter, **options: Any) -> Any:
    return run_report(ReportOptions(adapter=adapter, batch_size=8, model=MODEL, **options))


class SameIdentity(ClassModelAdapter):
    def identity(self, tensor: Any) -> Any:
        return tensor  # no new node: the gradient read on it would be the total


class FloatLoss(ClassModelAdapter):
    def loss_and_backward(self, logits: Any, targets: Any) -> Any:
        return super().loss_and_backward(logits, targets).item()


class TupleOps(ClassModelAdapter):
    def check_ops(self, output: Any, inputs: list[Any]) -> Any:
        found = super().check_ops(output, inputs)
        return None if found is None else tuple(found.values())


class NoModules(FunctionalModelAdapter):
    modules = Adapter.modules  # record_forward without its listing


class OneUnlisted(FunctionalModelAdapter):
    def modules(self) -> dict[str, Any]:
        return {p: f for p, f in super().modules().items() if p != "blocks.0.ffn"}


class TensorOnly(ClassModelAdapter):
    backward = Adapter.backward  # tensor() without backward()


@pytest.mark.parametrize("adapter, message", [
    (SameIdentity, r"^SameIdentity\.identity\(\) returned the tensor it was given: return a new"),
    (FloatLoss, r"^FloatLoss\.loss_and_backward returned float 2\.\d+: return your loss tensor"),
    (NoModules, r"^NoModules defines record_forward but not modules\(\)"),
    (OneUnlisted, r"^your model recorded a call of module 'blocks\.0\.ffn', which your adapter's modules\(\) "
                  r"does not list"),
], ids=["identity returning its argument", "a loss that is not a tensor", "record_forward without modules",
        "a recorded path modules does not list"])
def test_the_mistake_is_named(adapter: type, message: str) -> None:
    with pytest.raises(InputError, match=message):
        _report(adapter(AdapterOptions(MODEL, "float64")))


def test_check_ops_returning_something_else() -> None:
    with faults.activate("relu_backward_no_mask"), \
            pytest.raises(InputError, match=r"^TupleOps\.check_ops returned tuple \('relu_backward_passes_all'"):
        _report(TupleOps(AdapterOptions(MODEL, "float64")))


def test_tensor_without_backward_says_which_is_missing() -> None:
    with faults.activate("attention_no_scale"):
        report = _report(TensorOnly(AdapterOptions(MODEL, "float64")))
    assert report.not_checked["modules alone"].startswith("TensorOnly defines no backward() (it defines tensor())")


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "wrong_adapter.py").write_text(
        "from tests.differential.test_adapter_mistakes import FloatLoss\n\n"
        "def make_adapter(options):\n    return FloatLoss(options)\n")
    command = [sys.executable, "-m", "differential.cli", "report", "--adapter", "wrong_adapter:make_adapter"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "FloatLoss.loss_and_backward returned float" in lines[0], done.stderr


# --- a model built for another architecture than the run's --------------------------------------

def _built(**fields: Any) -> ClassModelAdapter:
    return ClassModelAdapter(AdapterOptions(replace(MODEL, **fields)))


def _problems(adapter: Adapter, **fields: Any) -> list[str]:
    with pytest.raises(InputError) as caught:
        run_report(ReportOptions(adapter=adapter, batch_size=8, model=replace(MODEL, **fields)))
    return str(caught.value).splitlines()[1:]


def test_fewer_blocks_than_the_run_asks_for_is_one_line_naming_layers() -> None:
    lines = _problems(_built(num_layers=1), num_layers=3)
    per_block = len([n for n in dict(_built(num_layers=1).named_parameters()) if n.startswith("blocks.0.")])
    assert lines == [f"  missing: blocks.1 to blocks.2 ({2 * per_block} reference parameters): your model has 1 block "
                     "and the run asks for 3 (a factory that takes no argument builds the size it likes: take "
                     "AdapterOptions and build options.layers blocks, or run with --layers 1)"]


def test_a_missing_final_norm_or_head_names_the_flag() -> None:
    lines = _problems(_built(final_norm=False, tie_head=True), final_norm=True, tie_head=False)
    assert lines == [
        "  missing: the reference parameter 'ln_f.weight' (shape (32,)) has no counterpart in your model (if your "
        "model has no final LayerNorm, run with --no-final-norm)",
        "  missing: the reference parameter 'ln_f.bias' (shape (32,)) has no counterpart in your model (if your "
        "model has no final LayerNorm, run with --no-final-norm)",
        "  missing: the reference parameter 'head.weight' (shape (10, 32)) has no counterpart in your model (if your "
        "head reuses the token embedding's weight, run with --tie-head)"]


def test_a_final_norm_the_run_lacks_names_the_flag() -> None:
    lines = _problems(_built(final_norm=True), final_norm=False)
    assert lines[0] == ("  unknown reference module: ln_f maps to 'ln_f', which the reference lacks (the run's "
                        "architecture has no final LayerNorm: run with --final-norm)")
    assert len(lines) == 3 and all(line.endswith("run with --final-norm)") for line in lines)
