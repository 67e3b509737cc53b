"""`scratchdiff repro`: for each finding, a small standalone test that fails while the fault is on and
passes once it is off; shrunk below the report's sizes; run without torch; rerun by `--check`.

The default run covers a representative subset of the catalogue (one fault per target: a module's
forward, backward and parameter gradient, the loss, the optimizer, the data, a repeated backward);
the whole catalogue and every fault of the foreign frameworks run under ``-m slow``
(`benchmarks/repro_sizes.py` prints the counts, sizes and times)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from differential import faults, repro, repro_case
from differential.cli import main
from differential.report import ReportOptions

ROOT = Path(__file__).resolve().parents[2]
SUBSET = ["attention_no_scale", "residual_from_data", "embedding_grad_overwrite", "loss_backward_no_mean",
          "optimizer_misses_ffn", "targets_not_reversed", "recursive_backward", "functional_attention_no_scale"]


def _options(fault: faults.Fault) -> ReportOptions:
    impl = "functional" if fault.impl == "functional" else "class"
    return ReportOptions(impl=impl, model=fault.model_for(ReportOptions().model), **fault.report)


def _write(name: str, folder: Path) -> list[repro.Written]:
    fault = faults.get_fault(name)
    with faults.activate(name):
        return repro.write_repros(_options(fault), folder, f"scratchdiff repro --fault {name}")


def _fails_on_passes_off(name: str, folder: Path) -> list[repro.Written]:
    written = _write(name, folder)
    fault = faults.get_fault(name)
    expected = fault.expected(_options(fault).model)[0]
    assert (written[0].finding.module, written[0].finding.phase, written[0].finding.kind) == expected
    tests = [w for w in written if w.test is not None]
    assert tests and all(w.reason is None for w in written), [(w.finding.module, w.reason) for w in written]
    with faults.activate(name):
        on = repro.check_dir(folder)
    off = repro.check_dir(folder)
    assert len(on) == len(off) == len(tests)
    assert not any(o.passed for o in on), [(o.test.name, o.message) for o in on]
    assert all(o.passed for o in off), [(o.test.name, o.message) for o in off]
    assert all(w.fails_now for w in tests)
    return written


@pytest.mark.parametrize("name", SUBSET)
def test_repro_fails_with_the_fault_and_passes_without(name: str, tmp_path: Path) -> None:
    written = _fails_on_passes_off(name, tmp_path)
    first = written[0]
    assert first.after.batch < first.before.batch and first.after.seq_len < first.before.seq_len


@pytest.mark.slow
@pytest.mark.parametrize("name", faults.names())
def test_every_catalogue_fault(name: str, tmp_path: Path) -> None:
    _fails_on_passes_off(name, tmp_path)


def test_the_subset_covers_every_kind_of_target() -> None:
    targets = set()
    for name in SUBSET:
        f = faults.get_fault(name)
        module = "(model)" if f.kind == "repeated_backward" else f.module
        targets.add(repro.target_of(repro_case_divergence(module, f.phase, f.kind))[0] + f"/{f.phase}")
    assert {"module/forward", "module/backward", "module/param_grad", "loss/backward", "optimizer/optimizer",
            "data/training"} <= targets


def repro_case_divergence(module: str, phase: str, kind: str) -> Any:
    from differential.diagnose import Divergence

    return Divergence(module=module, phase=phase, kind=kind, hint="", scratch_source="", reference_source="")


def test_a_clean_model_has_nothing_to_reproduce(tmp_path: Path) -> None:
    assert repro.write_repros(ReportOptions(), tmp_path, "scratchdiff repro") == []
    assert list(tmp_path.iterdir()) == []


def test_a_training_only_divergence_says_why_no_repro() -> None:
    target, reason = repro.target_of(repro_case_divergence("(model)", "training", "value_mismatch"))
    assert target is None and "--steps" in reason


def test_the_tolerance_is_the_reports(tmp_path: Path) -> None:
    """A saved expected output moved by far less than any bug, but well above float64 round-off,
    fails the repro: the comparison is the report's near-machine-precision model, not allclose."""
    _write("attention_no_scale", tmp_path)
    data = next(tmp_path.glob("*.npz"))
    case = repro_case.load(data)
    got = repro_case.run(case)  # the clean code
    repro_case.assert_matches(case, got)
    case.arrays["expected/output"] = case.arrays["expected/output"] * (1 + 1e-6)
    with pytest.raises(AssertionError, match="output: max abs"):
        repro_case.assert_matches(case, got)


def test_the_case_file_holds_no_pickle_and_only_the_modules_weights(tmp_path: Path) -> None:
    _write("attention_no_scale", tmp_path)
    data = next(tmp_path.glob("*.npz"))
    with np.load(data, allow_pickle=False) as arrays:
        weights = [k for k in arrays.files if k.startswith("weight/")]
        assert all(arrays[k].dtype != object for k in arrays.files)
    assert weights and all(k.startswith("weight/blocks.0.attn.") for k in weights)


def test_the_generated_test_is_readable(tmp_path: Path) -> None:
    _write("attention_no_scale", tmp_path)
    test = tmp_path / "test_blocks_0_attn_forward_value_mismatch.py"
    text = test.read_text()
    assert "def test_blocks_0_attn_forward_value_mismatch()" in text
    for words in ("scratchdiff repro --fault attention_no_scale", "Seen in the report:", "max abs", "Hint:",
                  "Shrunk: batch 16 -> 1, sequence 8 -> ", "At this size:"):
        assert words in text


def test_a_repro_runs_under_pytest_without_torch(tmp_path: Path) -> None:
    """The written test, in a fresh interpreter where importing torch fails: it passes on the clean code."""
    _write("residual_from_data", tmp_path)
    code = ("import sys; sys.modules['torch'] = None; import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(tmp_path)!r}]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "repros"
    assert main(["repro", "--fault", "loss_backward_no_mean", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "fails now, as it should" in said and "shrunk: batch 16 -> 1" in said
    assert main(["repro", "--check", str(out)]) == 0  # the fault is off again: the fix is "in"
    assert "1 of 1 repro(s) pass" in capsys.readouterr().out
    with faults.activate("loss_backward_no_mean"):
        assert main(["repro", "--check", str(out)]) == 1
    said = capsys.readouterr().out
    assert said.startswith("FAIL test_loss_backward_scale_factor.py") and "0 of 1 repro(s) pass" in said


@pytest.mark.parametrize("argv, words", [
    (["repro", "--check", "no-such-folder"], "is not a folder"),
    (["repro", "--fault", "no_such_fault"], "unknown fault 'no_such_fault'"),
    (["repro", "--fault", "layernorm_unbiased"], "add --impl functional"),
])
def test_cli_bad_input(argv: list[str], words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_cli_check_of_an_empty_folder_and_an_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repro", "--check", str(tmp_path)]) == 2
    assert "holds no repro" in capsys.readouterr().err
    afile = tmp_path / "f"
    afile.write_text("")
    assert main(["repro", "-o", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err


# --- the foreign frameworks, through their adapters -----------------------------------------------

def _foreign(package: str) -> tuple[list[Any], str]:
    import importlib

    return importlib.import_module(f"tests.{package}.faults").FAULTS, f"tests.{package}.adapter:make_adapter"


def _foreign_fails_on_passes_off(package: str, fault: Any, folder: Path, monkeypatch: pytest.MonkeyPatch
                                 ) -> list[repro.Written]:
    from differential.adapter import AdapterOptions, load_adapter, run_config

    _, spec = _foreign(package)
    adapter = load_adapter(spec, AdapterOptions())
    options = ReportOptions(adapter=adapter, model=run_config(adapter, ReportOptions().model), batch_size=8,
                            optimizer=getattr(fault, "optimizer", None) or "adam")
    with warnings.catch_warnings(), monkeypatch.context() as patch:
        warnings.simplefilter("ignore", RuntimeWarning)
        patch.setattr(fault.target, fault.attribute, fault.replacement)
        written = repro.write_repros(options, folder, "scratchdiff repro --adapter " + spec, adapter_spec=spec)
        on = repro.check_dir(folder)
    off = repro.check_dir(folder)
    assert (fault.module, fault.phase) in {(w.finding.module, w.finding.phase) for w in written}
    assert on and len(on) == len(off) == sum(w.test is not None for w in written)
    assert not any(o.passed for o in on), [(o.test.name, o.message) for o in on]
    assert all(o.passed for o in off), [(o.test.name, o.message) for o in off]
    return written


FOREIGN = [(p, f) for p in ("foreign", "foreign_course") for f in _foreign(p)[0]]
FOREIGN_SUBSET = {("foreign", "residual_from_raw_data"), ("foreign_course", "attention_unscaled"),
                  ("foreign_course", "positions_detached"), ("foreign_course", "optimizer_misses_head")}


@pytest.mark.parametrize("package, fault", [c for c in FOREIGN if (c[0], c[1].name) in FOREIGN_SUBSET],
                         ids=lambda c: getattr(c, "name", c))
def test_foreign_repro_fails_with_the_fault_and_passes_without(package: str, fault: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    written = _foreign_fails_on_passes_off(package, fault, tmp_path, monkeypatch)
    w = next(w for w in written if w.finding.module == fault.module)
    assert w.after.batch < w.before.batch
    if package == "foreign_course":  # its factory builds the model the options ask for: every size shrinks
        assert w.after.seq_len < w.before.seq_len and w.after.width < w.before.width
    else:  # tinyflow's model has fixed sizes: only the batch may shrink
        assert (w.after.seq_len, w.after.width) == (w.before.seq_len, w.before.width)


@pytest.mark.slow
@pytest.mark.parametrize("package, fault", FOREIGN, ids=lambda c: getattr(c, "name", c))
def test_every_foreign_fault(package: str, fault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _foreign_fails_on_passes_off(package, fault, tmp_path, monkeypatch)


def test_a_foreign_repro_rebuilds_the_users_model_through_the_adapter(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    faults_, _ = _foreign("foreign_course")
    fault = next(f for f in faults_ if f.name == "attention_unscaled")
    _foreign_fails_on_passes_off("foreign_course", fault, tmp_path, monkeypatch)
    case = repro_case.load(next(tmp_path.glob("*.npz")))
    assert case.meta["adapter"] == "tests.foreign_course.adapter:make_adapter"
    assert case.meta["config"]["embed_dim"] < 32


def test_a_float32_repro_keeps_the_reports_noise_floor(tmp_path: Path) -> None:
    """float32: judged against the float64 reference with the reference's own float32 error as the floor."""
    with faults.activate("sqrt_backward_no_half"):
        written = repro.write_repros(ReportOptions(dtype="float32"), tmp_path, "scratchdiff repro --dtype float32")
        assert [o.passed for o in repro.check_dir(tmp_path)] == [False]
    assert [o.passed for o in repro.check_dir(tmp_path)] == [True]
    case = repro_case.load(written[0].data)
    assert case.dtype == "float32" and any(k.startswith("noise/") for k in case.arrays)
