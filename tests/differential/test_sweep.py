"""The hyperparameter sweep: same figures for any worker count and backend (a real Dask cluster on the
loopback interface included), settings checked before any run, crashes recorded, finished runs kept
on interrupt and said so, result files with the documented rows and columns, probe runs that show the
trend, the verdict's cases, one-line CLI errors.

Grids that train are tiny (1 epoch of 32 sequences, 64 test sequences): these tests check the
machinery, not whether the model learns. Plot and verdict tests use made-up rows, no training.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
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


def crash_at_lr_001(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every run with lr 0.01 raise inside training (in this process: use one worker)."""
    real = training.run

    def run(plan: training.TrainPlan) -> dict:
        if plan.overrides["lr"] == 0.01:
            raise FloatingPointError("overflow in exp")
        return real(plan)

    monkeypatch.setattr(training, "run", run)


def test_a_crashing_run_is_recorded_and_the_others_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    crash_at_lr_001(monkeypatch)
    result = sweep.run_sweep(tiny_plan(), workers=1)
    status = {(r["lr"], r["seed"]): r["status"] for r in result.rows}
    assert status == {(0.003, 0): "ok", (0.003, 1): "ok", (0.01, 0): "failed", (0.01, 1): "failed"}
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert all(r["error"].startswith("FloatingPointError: overflow in exp (at test_sweep.py:") for r in failed)
    assert all(r["exact_match"] is None and r["loss"] is None for r in failed)
    assert "2 of 4 runs crashed, e.g. FloatingPointError: overflow in exp" in sweep.verdict(result)


def test_every_run_crashing_is_the_verdict_with_the_error() -> None:
    result = sweep.run_sweep(tiny_plan(fault="matmul_backward_T", seed=(0,)), workers=1)
    assert {r["status"] for r in result.rows} == {"failed"}
    line = sweep.verdict(result)
    assert line.startswith("every run crashed: ValueError: matmul:") and result.rows[0]["error"] in line


@pytest.mark.parametrize("grid, named", [
    ({"embed_dim": (16, 32), "num_heads": (2, 3)}, "3 heads for width 16, 3 heads for width 32"),
    ({"seed": (0, -1)}, "seed must be a non-negative integer, got -1"),
    ({"seed": (2**32,)}, "seed must be below 2**32"),
    ({"num_layers": (0,)}, "num_layers must be a positive integer, got 0"),
])
def test_settings_are_refused_before_any_run(grid: dict, named: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "run_one", lambda *_: pytest.fail("a run started"))
    with pytest.raises(ValueError) as caught:
        sweep.run_sweep(tiny_plan(**grid), workers=1)
    assert named in str(caught.value)


def test_any_exception_in_training_becomes_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(plan: training.TrainPlan) -> dict:
        raise RuntimeError("shapes (4, 8)\nand (8, 3)")

    monkeypatch.setattr(training, "run", explode)
    row = sweep.run_one(7, tiny_plan().runs()[0], tiny_plan())
    assert row["run"] == 7 and row["status"] == "failed"
    assert row["error"].startswith("RuntimeError: shapes (4, 8) and (8, 3) (at test_sweep.py:")


def test_interrupting_keeps_the_finished_runs_and_says_so_everywhere(tmp_path: Path) -> None:
    def stop_after_first(row: dict) -> None:
        raise KeyboardInterrupt

    result = sweep.run_sweep(tiny_plan(), workers=1, on_result=stop_after_first)
    assert result.interrupted and len(result.rows) == 1 and result.total == 4
    sweep.write_results(result, tmp_path)
    data = json.loads((tmp_path / "sweep.json").read_text())["sweep"]
    assert data["finished_runs"] == 1 and data["interrupted"] is True
    assert data["verdict"].startswith("interrupted after 1 of 4 runs; on those: ")
    assert "no trend measured: interrupted before the runs that measure it" in data["verdict"]
    text = sweep.summary_text(result)
    assert "best 1 of 1 runs (INTERRUPTED: 1 of 4 runs finished)" in " ".join(text.split())  # the table's title
    assert "interrupted: 1 of 4 runs finished" in text
    fig = sweep.plot(result)
    assert fig._suptitle.get_text().startswith("INTERRUPTED: 1 of 4 runs finished")
    cells = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert cells.count("not run") == 1 and len([c for c in cells if c not in ("not run", "crash")]) == 1


def test_result_files_have_one_row_per_run_and_every_column(tmp_path: Path) -> None:
    result = sweep.run_sweep(tiny_plan(seed=(0,), lr=(0.003, 0.01, 0.03)), workers=1)
    result.rows[1] = {**result.rows[1], "status": "failed", "error": "ValueError: boom", "exact_match": None,
                      "token_accuracy": None, "loss": None, "train_loss_first": None, "train_loss_last": None}
    paths = sweep.write_results(result, tmp_path / "new" / "folder")
    assert [p.name for p in paths] == ["sweep.csv", "sweep.json", "sweep.png"]
    with paths[0].open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and [r["run"] for r in rows] == ["0", "1", "2"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert float(rows[0]["lr"]) == 0.003 and rows[0]["steps"] == "1" and 0 <= float(rows[0]["token_accuracy"]) <= 1
    data = json.loads(paths[1].read_text())
    assert data["sweep"]["total_runs"] == 3
    assert data["sweep"]["verdict"].startswith("too short to tell: the longest run took 1 optimizer steps")
    assert [tuple(run) for run in data["runs"]] == [COLUMNS] * 3
    assert data["probes"] == []  # one epoch cannot be halved
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(paths[0].parent.glob(".*partial"))


def made_up(plan: SweepPlan, figures: Any, status: str = "ok") -> SweepResult:
    """A result with every run of ``plan`` at ``figures(settings)``, no training: an exact-sequence
    accuracy (token accuracy the same, test loss 1 - it, training loss falling from 2 to 1), or a dict
    of the fields to set."""
    rows = []
    for index, settings in enumerate(plan.runs()):
        got = figures(settings)
        if not isinstance(got, dict):
            got = {"exact_match": got, "token_accuracy": got, "loss": 1 - got}
        rows.append({**{c: None for c in COLUMNS}, **settings, "run": index, "status": status, "seconds": 1.0,
                     "train_loss_first": 2.0, "train_loss_last": 1.0, **got,
                     "error": "" if status == "ok" else "ValueError: boom"})
    return SweepResult(plan, rows, len(rows), False, 1.0, 2, "loky")


def stalled(token: float = 0.12, loss_falls: bool = True) -> Callable[[dict], dict]:
    """No setting learns; token accuracy and test loss the same at every budget."""
    return lambda s: {"exact_match": 0.0, "token_accuracy": token, "loss": 2.2,
                      "train_loss_first": 2.3, "train_loss_last": 2.0 if loss_falls else 2.29}


def improving(s: dict) -> dict:
    """No setting learns yet, but 100 epochs beat 50: token accuracy up, test loss down."""
    token = 0.2 if s["epochs"] == 50 else 0.4 + s["lr"]
    return {"exact_match": 0.0, "token_accuracy": token, "loss": 2.4 - 2 * token}


@pytest.mark.parametrize("impl, fault, figures, status, expected", [
    ("class", None, lambda s: 1.0 if s["lr"] >= 0.005 else 0.2, "ok",
     "learns in 36 of 72 settings (exact-sequence accuracy >= 95% on held-out sequences)"),
    ("class", None, lambda s: 0.95 if s["lr"] == 0.01 else 0.94, "ok", "learns in 18 of 72 settings"),
    ("class", None, improving, "ok", "still improving: train longer (accuracy rising with epochs, loss falling): "
                                     "token accuracy 20.0% after 50 epochs, 41.0% after 100, test loss 2.000 -> "
                                     "1.580; best exact-sequence accuracy 0.0%"),
    ("class", None, lambda s: {**improving(s), "loss": 1.0 + s["epochs"] / 100}, "ok",  # test loss rising
     "fails everywhere although loss falls"),
    ("class", None, lambda s: 0.7 if s["lr"] >= 0.005 else 0.2, "ok",
     "learns partly: best exact-sequence accuracy 70.0%, no setting reaches 95%, not rising with epochs"),
    ("class", "residual_from_data", stalled(), "ok",
     "fails everywhere although loss falls: look for a bug (`scratchdiff report --fault residual_from_data`) "
     "(best exact-sequence accuracy 0.0%, token accuracy 12.0%, not rising with epochs)"),
    ("class", None, stalled(loss_falls=False), "ok",
     "fails everywhere and the loss does not fall: look for a bug (`scratchdiff report`)"),
    ("functional", "functional_attention_no_scale", stalled(), "ok",
     "fails everywhere although loss falls: look for a bug "
     "(`scratchdiff report --fault functional_attention_no_scale --impl functional`)"),
    ("class", None, lambda s: 0.0, "failed", "every run crashed: ValueError: boom"),
])
def test_verdict(impl: str, fault: str | None, figures: Any, status: str, expected: str) -> None:
    assert sweep.verdict(made_up(SweepPlan(impl=impl, fault=fault), figures, status)).startswith(expected)


@pytest.mark.parametrize("steps, expected", [
    (4, "too short to tell: the longest run took 4 optimizer steps (fewer than 10); train longer before "
        "suspecting a bug (best exact-sequence accuracy 0.0%, token accuracy 12.0%, not rising with epochs)"),
    (10, "fails everywhere although loss falls: look for a bug"),
])
def test_a_few_optimizer_steps_are_too_short_to_call_a_bug(steps: int, expected: str) -> None:
    result = made_up(SweepPlan(), lambda s: {**stalled()(s), "steps": steps if s["epochs"] == 100 else steps // 2})
    assert sweep.verdict(result).startswith(expected)


def test_verdict_names_the_most_common_error_and_counts_the_others() -> None:
    result = made_up(SweepPlan(), lambda s: 0.0, "failed")
    result.rows[0]["error"] = "MemoryError: too big"
    assert sweep.verdict(result) == "every run crashed: ValueError: boom (and 1 other errors: see sweep.csv)"


def test_a_single_budget_gets_probe_runs_that_are_the_first_half_of_their_runs() -> None:
    plan = tiny_plan(lr=(0.003, 0.01, 0.03, 0.1), epochs=(4,), seed=(0,))
    result = sweep.run_sweep(plan, workers=1)
    assert not any(r["exact_match"] >= sweep.LEARNED_AT for r in result.rows)  # 4 epochs of 32: nothing learns
    best = sorted(result.rows, key=lambda r: (-r["token_accuracy"], r["run"]))[:sweep.PROBES]
    assert [p["probe_of"] for p in result.probes] == sorted(r["run"] for r in best)
    assert {p["epochs"] for p in result.probes} == {2}
    # A probe is the same seeded run stopped at half the budget: the same figures as a 2-epoch sweep.
    half = sweep.run_sweep(tiny_plan(lr=(0.003, 0.01, 0.03, 0.1), epochs=(2,), seed=(0,)), workers=1)
    by_lr = {r["lr"]: r for r in half.rows}
    for probe in result.probes:
        assert figures_of(probe) == figures_of(by_lr[probe["lr"]])
    assert len(sweep.trend_pairs(result)) == len(result.probes)


def figures_of(row: dict) -> tuple:
    return row["exact_match"], row["token_accuracy"], row["loss"], row["train_loss_first"], row["train_loss_last"]


def test_no_probes_when_a_setting_learns_or_the_grid_has_two_budgets() -> None:
    assert sweep.probe_runs(SweepPlan(), made_up(SweepPlan(), lambda s: 0.0).rows) == []  # epochs 50, 100
    one = SweepPlan(Grid(epochs=(10,)))
    assert sweep.probe_runs(one, made_up(one, lambda s: 1.0 if s["lr"] == 0.01 else 0.0).rows) == []
    probes = sweep.probe_runs(one, made_up(one, lambda s: {"exact_match": 0.0, "token_accuracy": s["lr"],
                                                           "loss": 1.0}).rows)
    assert len(probes) == sweep.PROBES and {s["lr"] for _, s in probes} == {0.01}
    assert {s["epochs"] for _, s in probes} == {5}


def test_trend_pairs_from_the_grid_match_settings() -> None:
    pairs = sweep.trend_pairs(made_up(SweepPlan(), improving))
    assert len(pairs) == 36
    for short, long in pairs:
        assert (short["epochs"], long["epochs"]) == (50, 100)
        assert all(short[k] == long[k] for k in ("lr", "embed_dim", "num_heads", "seed"))


@pytest.mark.parametrize("fault, expected", [
    (None, "still improving: train longer (accuracy rising with epochs, loss falling)"),
    ("residual_from_data", "fails everywhere although loss falls: look for a bug "
                           "(`scratchdiff report --fault residual_from_data`)"),
])
def test_five_epochs_tell_a_short_budget_from_a_bug(fault: str | None, expected: str) -> None:
    """The issue's case: at 5 epochs the clean model has not learned yet (it does at 20), the broken one
    never will; the probes at half the budget tell them apart."""
    plan = SweepPlan(Grid(lr=(0.01,), epochs=(5,), embed_dim=(32,), num_heads=(4,)), fault=fault)
    result = sweep.run_sweep(plan, workers=1)
    assert result.rows[0]["exact_match"] < sweep.LEARNED_AT and len(result.probes) == 1
    assert sweep.verdict(result).startswith(expected)


def test_summary_names_the_best_settings_and_the_share_above_95() -> None:
    text = sweep.summary_text(made_up(SweepPlan(), lambda s: 1.0 if s["embed_dim"] == 64 else 0.5))
    assert "33% of 72 runs reach >= 95%" in text and text.splitlines()[-1].startswith("verdict: learns in 24")
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
    assert [t.get_text() for t in heatmaps[0].texts[:4]] == ["10\ntoken 10%", "30\ntoken 30%", "50\ntoken 50%",
                                                           "100\ntoken 100%"]
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
    (["--heads", "3", "--embed-dim", "32"], "--heads must divide every --embed-dim (every combination is trained): "
                                            "3 heads for width 32"),
    (["--heads", "2,3", "--embed-dim", "16,24"], ": 3 heads for width 16"),
    (["--seed", "-1"], "--seed: expected comma-separated seeds from 0 to 4294967295, got '-1'"),
    (["--seed", "0,4294967296"], "'4294967296'"),
])
def test_bad_flags_exit_2_with_one_line(flags: list[str], named: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *flags, "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and named in err, err


def test_cli_writes_the_results_and_exits_1_when_no_setting_learns(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    flags = [*TINY_FLAGS[:2], "--epochs", "10", *TINY_FLAGS[4:]]  # 10 epochs of one step each: long enough to judge
    code = main(["sweep", *flags, "--workers", "1", "--fault", "residual_from_data", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "look for a bug (`scratchdiff report --fault residual_from_data`)" in out.splitlines()[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]
