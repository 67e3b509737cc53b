"""The hyperparameter sweep: same figures for any worker count, crashes recorded, finished runs kept
on interrupt, result files with the documented rows and columns, the verdict, one-line CLI errors.

Grids that train are tiny (1 epoch of 32 sequences, 64 test sequences): these tests check the
machinery, not whether the model learns. Plot and verdict tests use made-up rows, no training.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from differential import sweep, training
from differential.cli import main
from differential.sweep import COLUMNS, Grid, SweepPlan, SweepResult
from scratch_model.layers import TransformerBlock

TINY = {"lr": (0.003, 0.01), "epochs": (1,), "embed_dim": (16,), "num_heads": (2,), "seed": (0, 1)}
TINY_FLAGS = ["--lr", "0.003,0.01", "--epochs", "1", "--embed-dim", "16", "--heads", "2", "--seed", "0,1",
              "--num-train", "32", "--num-test", "64"]


def tiny_plan(fault: str | None = None, **grid: Any) -> SweepPlan:
    return SweepPlan(Grid(**{**TINY, **grid}), fault=fault, num_train=32, num_test=64)


def figures(result: SweepResult) -> list[tuple]:
    return [(r["run"], r["status"], r["exact_match"], r["token_accuracy"], r["loss"]) for r in result.rows]


def test_worker_count_and_backend_do_not_change_the_figures() -> None:
    plan = tiny_plan()
    one = sweep.run_sweep(plan, workers=1)
    assert [r["run"] for r in one.rows] == [0, 1, 2, 3] and {r["status"] for r in one.rows} == {"ok"}
    assert figures(sweep.run_sweep(plan, workers=2)) == figures(one)
    assert figures(sweep.run_sweep(plan, workers=2, backend="multiprocessing")) == figures(one)


def test_the_fault_is_switched_on_inside_each_worker_and_off_again() -> None:
    clean_forward = TransformerBlock.forward
    clean = sweep.run_sweep(tiny_plan(), workers=2)
    broken = sweep.run_sweep(tiny_plan(fault="residual_from_data"), workers=2)
    assert all(a[4] != b[4] for a, b in zip(figures(clean), figures(broken), strict=True))  # the losses
    assert {r["fault"] for r in broken.rows} == {"residual_from_data"}
    assert TransformerBlock.forward is clean_forward


def test_a_crashing_run_is_recorded_and_the_others_finish() -> None:
    result = sweep.run_sweep(tiny_plan(seed=(0,), num_heads=(2, 3)), workers=2)
    status = {(r["lr"], r["num_heads"]): r["status"] for r in result.rows}
    assert status == {(0.003, 2): "ok", (0.003, 3): "failed", (0.01, 2): "ok", (0.01, 3): "failed"}
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert all("embed_dim (16) must be divisible by num_heads (3)" in r["error"] for r in failed)
    assert all(r["exact_match"] is None and r["loss"] is None for r in failed)


def test_any_exception_in_training_becomes_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(plan: training.TrainPlan) -> dict:
        raise RuntimeError("shapes (4, 8)\nand (8, 3)")

    monkeypatch.setattr(training, "run", explode)
    row = sweep.run_one(7, tiny_plan().runs()[0], tiny_plan())
    assert row["run"] == 7 and row["status"] == "failed"
    assert row["error"].startswith("RuntimeError: shapes (4, 8) and (8, 3) (at test_sweep.py:")


def test_interrupting_keeps_the_finished_runs(tmp_path: Path) -> None:
    def stop_after_first(row: dict) -> None:
        raise KeyboardInterrupt

    result = sweep.run_sweep(tiny_plan(), workers=1, on_result=stop_after_first)
    assert result.interrupted and len(result.rows) == 1 and result.total == 4
    sweep.write_results(result, tmp_path)
    assert json.loads((tmp_path / "sweep.json").read_text())["sweep"]["finished_runs"] == 1


def test_result_files_have_one_row_per_run_and_every_column(tmp_path: Path) -> None:
    result = sweep.run_sweep(tiny_plan(seed=(0,), num_heads=(2, 3)), workers=1)
    paths = sweep.write_results(result, tmp_path / "new" / "folder")
    assert [p.name for p in paths] == ["sweep.csv", "sweep.json", "sweep.png"]
    with paths[0].open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and [r["run"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "failed"]
    assert float(rows[0]["lr"]) == 0.003 and rows[0]["steps"] == "1" and 0 <= float(rows[0]["token_accuracy"]) <= 1
    data = json.loads(paths[1].read_text())
    assert data["sweep"]["total_runs"] == 4 and data["sweep"]["verdict"].startswith("fails in every setting")
    assert [tuple(run) for run in data["runs"]] == [COLUMNS] * 4
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(paths[0].parent.glob(".*partial"))


def made_up(plan: SweepPlan, accuracy: Any, status: str = "ok") -> SweepResult:
    """A result with every run of ``plan`` at ``accuracy(settings)``, no training."""
    rows = []
    for index, settings in enumerate(plan.runs()):
        exact = accuracy(settings)
        rows.append({**{c: None for c in COLUMNS}, **settings, "run": index, "status": status,
                     "exact_match": exact, "token_accuracy": exact, "loss": 1 - exact, "seconds": 1.0,
                     "error": "" if status == "ok" else "ValueError: boom"})
    return SweepResult(plan, rows, len(rows), False, 1.0, 2, "loky")


@pytest.mark.parametrize("impl, fault, accuracy, status, expected", [
    ("class", None, lambda s: 1.0 if s["lr"] >= 0.005 else 0.2, "ok", "learns across 36 of 72 settings"),
    ("class", None, lambda s: 0.95 if s["lr"] == 0.01 else 0.94, "ok", "learns across 18 of 72 settings"),
    ("class", None, lambda s: 0.7 if s["lr"] >= 0.005 else 0.2, "ok", "learns partly: best exact-sequence "
                                                                       "accuracy 70.0%"),
    ("class", None, lambda s: 0.01, "ok", "fails in every setting (best 1.0%): look for a bug, not a hyperparameter"),
    ("class", "residual_from_data", lambda s: 0.0, "ok",
     "fails in every setting (best 0.0%): look for a bug, not a hyperparameter; "
     "`scratchdiff report --fault residual_from_data` shows where it breaks"),
    ("functional", "functional_attention_no_scale", lambda s: 0.0, "failed",
     "fails in every setting (no run finished training, 72 of 72 runs crashed): look for a bug, not a "
     "hyperparameter; `scratchdiff report --fault functional_attention_no_scale --impl functional`"),
])
def test_verdict(impl: str, fault: str | None, accuracy: Any, status: str, expected: str) -> None:
    assert sweep.verdict(made_up(SweepPlan(impl=impl, fault=fault), accuracy, status)).startswith(expected)


def test_summary_names_the_best_settings_and_the_share_above_95() -> None:
    text = sweep.summary_text(made_up(SweepPlan(), lambda s: 1.0 if s["embed_dim"] == 64 else 0.5))
    assert "33% of 72 runs reach >= 95%" in text and text.splitlines()[-1].startswith("verdict: learns across 24")
    assert "│    64 │" in text


def test_plot_has_one_labelled_heatmap_per_remaining_setting() -> None:
    fig = sweep.plot(made_up(SweepPlan(), lambda s: s["lr"] * 100))
    heatmaps = [ax for ax in fig.axes if ax.get_images()]
    colorbar = [ax for ax in fig.axes if not ax.get_images()]
    assert len(heatmaps) == 6  # epochs (2) x heads (3); x = learning rate, y = embedding width
    assert {ax.get_xlabel() for ax in heatmaps} == {"learning rate"}
    assert {ax.get_ylabel() for ax in heatmaps} == {"embedding width (dimensions)"}
    assert heatmaps[0].get_title() == "epochs = 50, heads = 2"
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == ["0.001", "0.003", "0.005", "0.01"]
    assert np.allclose(heatmaps[0].get_images()[0].get_array()[0], [10, 30, 50, 100])
    assert len(colorbar) == 1 and colorbar[0].get_ylabel() == "exact-sequence accuracy (%)"


def test_plot_caps_the_panels_and_says_so() -> None:
    plan = SweepPlan(Grid(num_layers=(1, 2), batch_size=(32, 64)))  # 2 x 3 x 2 x 2 = 24 panels
    fig = sweep.plot(made_up(plan, lambda s: 1.0))
    assert len([ax for ax in fig.axes if ax.get_images()]) == sweep.MAX_PANELS
    assert "first 12 of 24 panels shown" in fig._suptitle.get_text()


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.1,abc"], "'abc'"),
    (["--lr", "0.1,-2"], "'-2'"),
    (["--heads", "2,0"], "'0'"),
    (["--epochs", "1,"], "''"),
    (["--seed", "0,1.5"], "'1.5'"),
    (["--lr", "0.1,0.1"], "0.1 more than once"),
    (["--workers", "0"], "0"),
    (["--backend", "spark"], "'spark'"),
    (["--fault", "no_such_fault"], "'no_such_fault'"),
    (["--fault", "residual_from_data", "--impl", "torch"], "--impl class"),
    (["--steps", "3", "--num-train", "128"], "steps 3 is not a whole number of epochs"),
    (["--backend", "threading", "--workers", "2"], "two threads"),
    (["--backend", "dask"], "--scheduler"),
])
def test_bad_flags_exit_2_with_one_line(flags: list[str], named: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *flags, "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and named in err, err


def test_cli_writes_the_results_and_exits_1_when_no_setting_learns(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *TINY_FLAGS, "--workers", "1", "--fault", "residual_from_data", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "`scratchdiff report --fault residual_from_data` shows where it breaks" in out.splitlines()[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]
