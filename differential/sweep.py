"""Hyperparameter sweep: train over a grid of settings to tell a settings problem from a bug.

A correct model learns across a broad band of settings; a broken one stays near 0% everywhere.
Every setting is checked before any run starts (`SweepPlan` refuses a width its heads do not
divide, a negative seed, ...). `run_sweep` trains every point of a `Grid` through joblib (each run
in a worker, with the fault, if any, switched on inside that worker), records a crashed run as
"failed" with its error, and keeps the finished runs when interrupted. When no setting learns, a
few shorter "probe" runs (half the budget, otherwise the same) tell whether accuracy is still
rising. `write_results` writes CSV, JSON and a PNG of heatmaps; `summary_text` and `verdict` are
the terminal summary. The verdict tells four cases apart: it learns in some settings; it is still
improving (train longer); it fails everywhere although the loss falls (a bug); every run crashed. A
grid whose longest run is only a few optimizer steps is "too short to tell".

An epoch is one pass over the sweep's training set, which is smaller than the `train` command's
(`num_train` = 128 sequences by default, against 6000) so that the original plan's grid of 50 and
100 epochs runs in minutes on a laptop; the test set keeps its usual 1000 sequences.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import socket
import textwrap
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from differential import faults, training
from scratch_model.config import TransformerConfig

LEARNED_AT = 0.95  # exact-sequence accuracy that counts as "learns"
PARTLY_AT = 0.5  # below LEARNED_AT but this high: learns partly, even when no longer improving
# Accuracy "rises" from half the budget to the whole when token accuracy gains this much (on the
# default 1000 test sequences of 8 tokens its standard error is under 0.006) while the test loss falls.
RISE = 0.02
LOSS_FALL = 0.02  # the training loss "falls" when its last epoch is this share below its first
PROBES = 3  # settings (the best by token accuracy) re-trained on half the budget to see the trend
# Fewer optimizer steps than this in the longest run is too short to call anything a bug: the clean
# default model at lr 0.01 is at 18% token accuracy after 4 steps and 45% after 10 (and learns by 20).
MIN_STEPS = 10
BACKENDS = ("loky", "threading", "multiprocessing", "dask", "ray")
_STREAMING = ("loky", "threading", "dask")  # joblib backends that can yield results as they finish
MAX_PANELS = 12
COLUMNS = ("run", "impl", "fault", "lr", "epochs", "steps", "embed_dim", "num_heads", "num_layers", "batch_size",
           "seed", "num_train", "num_test", "exact_match", "token_accuracy", "loss", "train_loss_first",
           "train_loss_last", "seconds", "status", "error")
AXIS_LABELS = {"lr": "learning rate", "epochs": "epochs (passes over {n} training sequences)",
               "steps": "optimizer steps", "embed_dim": "embedding width (dimensions)",
               "num_heads": "attention heads", "num_layers": "transformer blocks",
               "batch_size": "batch size (sequences)", "seed": "seed"}


@dataclass(frozen=True)
class Grid:
    """The values tried for each setting; the sweep trains every combination. Give either
    ``epochs`` or ``steps`` (optimizer steps, a whole number of epochs)."""

    lr: tuple[float, ...] = (0.001, 0.003, 0.005, 0.01)
    epochs: tuple[int, ...] | None = (50, 100)  # passes over the sweep's training set
    steps: tuple[int, ...] | None = None
    embed_dim: tuple[int, ...] = (16, 32, 64)
    num_heads: tuple[int, ...] = (2, 4, 8)
    num_layers: tuple[int, ...] = (1,)
    batch_size: tuple[int, ...] = (64,)
    seed: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of epochs and steps")
        for name, values in self.axes().items():
            if not values:
                raise ValueError(f"{name} needs at least one value")
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"{name} lists {', '.join(map(str, duplicates))} more than once")
            for value in values:
                if name == "lr":
                    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                        raise ValueError(f"lr must be a positive number, got {value!r}")
                elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                    kind = "a non-negative integer" if name == "seed" else "a positive integer"
                    raise ValueError(f"{name} must be {kind}, got {value!r}")
                elif name == "seed" and value >= 2**32:
                    raise ValueError(f"seed must be below 2**32 (numpy's seeded generators), got {value}")

    @property
    def budget(self) -> str:
        return "epochs" if self.epochs is not None else "steps"

    def axes(self) -> dict[str, tuple]:
        """Axis name -> values, in grid order (the budget axis is epochs or steps)."""
        return {f.name: tuple(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class SweepPlan:
    """A grid plus what every run shares: implementation, fault, data sizes, precision."""

    grid: Grid = field(default_factory=Grid)
    impl: str = "class"
    fault: str | None = None
    num_train: int = 128  # training sequences; an epoch is one pass over them
    num_test: int = 1000
    dtype: str = "float64"
    # the architecture every run shares; the grid sets its embed_dim, num_heads and num_layers
    model: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        if self.impl not in training.IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {', '.join(training.IMPLEMENTATIONS)}, got {self.impl!r}")
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.fault is not None:
            fault = faults.get_fault(self.fault)
            if self.impl == "torch" or not fault.applies_to(self.impl):
                where = "class" if fault.impl == "both" else fault.impl
                raise ValueError(f"fault {self.fault!r} lives in the {where} implementation; use --impl {where}")
        self._check_models()
        for steps, batch in itertools.product(self.grid.steps or (), self.grid.batch_size):
            per_epoch = -(-self.num_train // batch)
            if steps % per_epoch:
                raise ValueError(f"steps {steps} is not a whole number of epochs: with {self.num_train} training "
                                 f"sequences and batch size {batch} an epoch is {per_epoch} steps")

    def _check_models(self) -> None:
        """Every combination of the lists is trained, so every one must be a valid model, before any run."""
        g = self.grid
        bad = sorted({(w, h) for w, h in itertools.product(g.embed_dim, g.num_heads) if w % h})
        if bad:
            pairs = ", ".join(f"{h} heads for width {w}" for w, h in bad)
            raise ValueError(f"--heads must divide every --embed-dim (every combination is trained): {pairs}")
        for width, heads, layers in itertools.product(g.embed_dim, g.num_heads, g.num_layers):
            replace(self.model, embed_dim=width, num_heads=heads, num_layers=layers)  # any other rule it has

    def runs(self) -> list[dict[str, Any]]:
        """Every grid point as a settings dict, in grid order."""
        axes = self.grid.axes()
        return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


@dataclass
class SweepResult:
    """The finished runs of a sweep (all of them unless ``interrupted``) and how it ran."""

    plan: SweepPlan
    rows: list[dict[str, Any]]  # one per finished run, in grid order
    total: int  # runs in the grid
    interrupted: bool
    wall_seconds: float
    workers: int
    backend: str
    # Shorter runs that show the trend when no setting learns: the same settings on half the budget,
    # each with "probe_of" (the run it shortens). Empty when the grid itself has two budgets.
    probes: list[dict[str, Any]] = field(default_factory=list)


def run_one(index: int, settings: dict[str, Any], plan: SweepPlan) -> dict[str, Any]:
    """Train one grid point; any exception becomes a "failed" row, so one crash never stops a sweep."""
    per_epoch = -(-plan.num_train // settings["batch_size"])
    epochs = settings.get("epochs") or settings["steps"] // per_epoch
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(settings, run=index, impl=plan.impl, fault=plan.fault or "", epochs=epochs,
               steps=epochs * per_epoch, num_train=plan.num_train, num_test=plan.num_test)
    try:
        model = replace(plan.model, embed_dim=settings["embed_dim"], num_heads=settings["num_heads"],
                        num_layers=settings["num_layers"])
        overrides = {"epochs": epochs, "batch_size": settings["batch_size"], "lr": settings["lr"],
                     "num_train": plan.num_train, "num_test": plan.num_test}
        train_plan = training.TrainPlan(impl=plan.impl, seed=settings["seed"], dtype=plan.dtype, model=model,
                                        overrides=overrides)
        # A diverging run is data (its loss is NaN), not a reason to flood the terminal.
        with faults.activate(plan.fault), np.errstate(all="ignore"):
            result = training.run(train_plan)
    except Exception as err:  # whatever one run raises is that run's result
        return {**row, "status": "failed", "error": _describe(err)}
    losses = result.get("train_loss") or [None]
    return {**row, "status": "ok", "error": "", "train_loss_first": losses[0], "train_loss_last": losses[-1],
            **{k: result[k] for k in ("exact_match", "token_accuracy", "loss", "seconds")}}


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}{where}"


def run_sweep(plan: SweepPlan, workers: int = 1, backend: str = "loky",
              on_result: Callable[[dict[str, Any]], None] | None = None,
              backend_options: dict[str, Any] | None = None) -> SweepResult:
    """Train every grid point with ``workers`` joblib workers on ``backend``; ``on_result(row)`` is
    called as each run finishes. Ctrl-C stops the sweep and returns the finished runs
    (``interrupted=True``). ``backend_options`` go to joblib (e.g. ``scheduler_host`` for dask)."""
    check_backend(plan, workers, backend)
    runs = list(enumerate(plan.runs()))
    # Longest runs first, so that no long run is left alone at the end while other workers idle.
    runs.sort(key=lambda item: -_work(item[1], plan))
    rows: list[dict[str, Any]] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for row in _execute(runs, plan, workers, backend, backend_options or {}):
            rows.append(row)
            if on_result is not None:
                on_result(row)
    except KeyboardInterrupt:
        interrupted = True
    rows.sort(key=lambda r: r["run"])
    probes: list[dict[str, Any]] = []
    if not interrupted:
        try:
            for row in _execute(probe_runs(plan, rows), plan, workers, backend, backend_options or {}):
                probes.append({**row, "probe_of": row["run"]})
        except KeyboardInterrupt:
            interrupted = True
    probes.sort(key=lambda r: r["run"])
    return SweepResult(plan, rows, len(runs), interrupted, time.perf_counter() - start, workers, backend, probes)


def check_backend(plan: SweepPlan, workers: int, backend: str) -> None:
    """Refuse (ValueError) a backend or worker count that cannot run ``plan``, before any run starts."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if backend == "threading" and workers > 1 and plan.impl != "torch":
        # The scratch autograd's no-grad switch is one module global, shared by every thread.
        raise ValueError(f"the {plan.impl} implementation cannot train in two threads of one process; "
                         f"use --backend loky or multiprocessing")
    _register(backend)


def reach_scheduler(address: str, timeout: float = 5.0) -> None:
    """Refuse (ValueError) a Dask scheduler address that nothing answers on, at once: joblib's own
    client would retry for 30 s and then fail deep inside the sweep."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme not in ("tcp", "tls") or not host or port is None:
        raise ValueError(f"--scheduler {address!r} is not a Dask scheduler address like tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"cannot reach the Dask scheduler at {address}: {err.strerror or err}") from None


def probe_runs(plan: SweepPlan, rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """When no setting learns and the grid has a single budget, the best few settings (by token
    accuracy) again on half the budget: (index of the run they shorten, settings). The runs are
    seeded alike, so a probe is the first half of its run, and the two show the trend."""
    axes = plan.grid.axes()
    budget = plan.grid.budget
    ok = [r for r in rows if r["status"] == "ok"]
    if len(axes[budget]) > 1 or not ok or any(r["exact_match"] >= LEARNED_AT for r in ok):
        return []
    best = sorted(ok, key=lambda r: (-r["token_accuracy"], r["run"]))[:PROBES]
    probes = []
    for r in best:
        epochs = r["epochs"] // 2
        if epochs < 1:
            continue
        settings = {name: r[name] for name in axes}
        settings[budget] = epochs if budget == "epochs" else epochs * -(-plan.num_train // r["batch_size"])
        probes.append((r["run"], settings))
    return probes


def _work(settings: dict[str, Any], plan: SweepPlan) -> float:
    steps = settings.get("steps") or settings["epochs"] * -(-plan.num_train // settings["batch_size"])
    return steps * settings["batch_size"] * settings["num_layers"] * settings["embed_dim"]


def _register(backend: str) -> None:
    if backend == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError:
            raise ValueError("backend 'ray' needs Ray installed: pip install -e '.[ray]'") from None
        register_ray()
    if backend == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError("backend 'dask' needs Dask installed: pip install 'dask[distributed]'") from None


def _execute(runs: list[tuple[int, dict[str, Any]]], plan: SweepPlan, workers: int, backend: str,
             options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from joblib import Parallel, delayed, parallel_config

    tasks = [delayed(run_one)(index, settings, plan) for index, settings in runs]
    with parallel_config(backend=backend, n_jobs=workers, **options):
        if backend in _STREAMING:
            results = Parallel(return_as="generator_unordered", batch_size=1)(tasks)
            try:
                yield from results
            finally:
                results.close()  # on Ctrl-C: cancel what is queued, stop the workers
            return
        # joblib's multiprocessing (and Ray's) backend returns lists only: run in waves of `workers`.
        with Parallel(batch_size=1) as parallel:
            for start in range(0, len(tasks), workers):
                yield from parallel(tasks[start:start + workers])


def verdict(result: SweepResult) -> str:
    """One line: it learns in some settings; it is still improving (train longer); it fails everywhere
    (a bug, with the loss falling or not); or every run crashed. An interrupted sweep says so first."""
    line = _verdict(result)
    if not result.interrupted:
        return line
    if len(result.rows) == result.total:
        return f"interrupted while checking the trend (every run finished): {line}"
    return f"interrupted after {len(result.rows)} of {result.total} runs; on those: {line}"


def _verdict(result: SweepResult) -> str:
    rows = result.rows
    if not rows:
        return "no run finished: nothing to judge"
    ok = [r for r in rows if r["status"] == "ok"]
    crashed = [r for r in rows if r["status"] == "failed"]
    if not ok:
        errors = Counter(r["error"] for r in crashed)
        error = errors.most_common(1)[0][0]
        more = f" (and {len(errors) - 1} other errors: see sweep.csv)" if len(errors) > 1 else ""
        return f"every run crashed: {error}{more}"
    note = f"; {len(crashed)} of {len(rows)} runs crashed, e.g. {crashed[0]['error']}" if crashed else ""
    learned = [r for r in ok if r["exact_match"] >= LEARNED_AT]
    if learned:
        return (f"learns in {len(learned)} of {len(rows)} settings (exact-sequence accuracy >= {LEARNED_AT:.0%} "
                f"on held-out sequences){note}")
    best_exact = max(r["exact_match"] for r in ok)
    best_token = max(r["token_accuracy"] for r in ok)
    pairs = trend_pairs(result)
    rising = [(short, long) for short, long in pairs if rises(short, long)]
    if rising:
        short, long = max(rising, key=lambda pair: (pair[1]["token_accuracy"], -pair[1]["run"]))
        return (f"still improving: train longer (accuracy rising with epochs, loss falling): token accuracy "
                f"{short['token_accuracy']:.1%} after {short['epochs']} epochs, {long['token_accuracy']:.1%} after "
                f"{long['epochs']}, test loss {short['loss']:.3f} -> {long['loss']:.3f}; best exact-sequence "
                f"accuracy {best_exact:.1%}{note}")
    if pairs:
        trend = "not rising with epochs"
    elif result.interrupted:
        trend = "no trend measured: interrupted before the runs that measure it"
    elif all(r["epochs"] < 2 for r in ok):
        trend = "no trend measured: a budget of 1 epoch cannot be halved"
    else:
        trend = "no trend measured"
    if best_exact >= PARTLY_AT:
        return (f"learns partly: best exact-sequence accuracy {best_exact:.1%}, no setting reaches {LEARNED_AT:.0%}, "
                f"{trend}: widen the grid before suspecting a bug{note}")
    detail = f" (best exact-sequence accuracy {best_exact:.1%}, token accuracy {best_token:.1%}, {trend})"
    steps = [r["steps"] for r in ok if r.get("steps") is not None]
    if steps and max(steps) < MIN_STEPS:
        return (f"too short to tell: the longest run took {max(steps)} optimizer steps (fewer than {MIN_STEPS}); "
                f"train longer before suspecting a bug{detail}{note}")
    command = report_command(result.plan)
    if any(loss_falls(r) for r in ok):
        return f"fails everywhere although loss falls: look for a bug (`{command}`){detail}{note}"
    return (f"fails everywhere and the loss does not fall: look for a bug (`{command}`) or a learning rate far "
            f"off{detail}{note}")


def trend_pairs(result: SweepResult) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(shorter run, longer run) of the same settings: the grid's two longest budgets, or a probe and
    the run it shortens."""
    plan = result.plan
    budget = plan.grid.budget
    values = sorted(plan.grid.axes()[budget])
    ok = [r for r in result.rows if r["status"] == "ok"]
    if len(values) > 1:
        others = [name for name in plan.grid.axes() if name != budget]
        shorter = {tuple(r[n] for n in others): r for r in ok if r[budget] == values[-2]}
        return [(shorter[key], r) for r in ok if r[budget] == values[-1]
                and (key := tuple(r[n] for n in others)) in shorter]
    by_run = {r["run"]: r for r in ok}
    return [(p, by_run[p["probe_of"]]) for p in result.probes if p["status"] == "ok" and p["probe_of"] in by_run]


def rises(short: dict[str, Any], long: dict[str, Any]) -> bool:
    """Accuracy rising (token accuracy up by RISE or more) while the test loss falls."""
    return long["token_accuracy"] - short["token_accuracy"] >= RISE and long["loss"] < short["loss"]


def loss_falls(row: dict[str, Any]) -> bool:
    """The training loss of the last epoch is LOSS_FALL (a share) below the first's."""
    first, last = row.get("train_loss_first"), row.get("train_loss_last")
    if first is None or last is None or not (math.isfinite(first) and math.isfinite(last)):
        return False
    return last < (1 - LOSS_FALL) * first


def report_command(plan: SweepPlan) -> str:
    """The `scratchdiff report` command that looks for the bug in what this sweep trained."""
    words = ["scratchdiff report"]
    if plan.fault:
        words.append(f"--fault {plan.fault}")
    if plan.impl != "class":
        words.append(f"--impl {plan.impl}" + (" --against class" if plan.impl == "torch" else ""))
    return " ".join(words)


def share_learned(rows: list[dict[str, Any]]) -> float:
    """Share of finished runs at or above LEARNED_AT exact-sequence accuracy (crashes count as misses)."""
    if not rows:
        return 0.0
    return sum(r["status"] == "ok" and r["exact_match"] >= LEARNED_AT for r in rows) / len(rows)


def summary_text(result: SweepResult, top: int = 5) -> str:
    """The terminal summary: the best settings, the share above 95% per setting, the verdict."""
    from rich.table import Table

    from differential.render import to_text

    plan, rows = result.plan, result.rows
    varied = [name for name, values in plan.grid.axes().items() if len(values) > 1]
    shown = [name for name in plan.grid.axes() if name in varied] or list(plan.grid.axes())
    fault = f", fault {plan.fault}" if plan.fault else ""
    stopped = f" (INTERRUPTED: {len(rows)} of {result.total} runs finished)" if result.interrupted else ""
    best = Table(title=f"sweep: {plan.impl} model{fault}, best {min(top, len(rows))} of {len(rows)} runs{stopped}")
    for name in (*shown, "exact-seq acc", "token acc", "test loss", "train s"):
        best.add_column(name, justify="right")
    ranked = sorted((r for r in rows if r["status"] == "ok"),
                    key=lambda r: (-r["exact_match"], -r["token_accuracy"], r["seconds"]))
    for r in ranked[:top]:
        best.add_row(*(f"{r[name]:g}" for name in shown), f"{r['exact_match']:.1%}",
                     f"{r['token_accuracy']:.1%}", f"{r['loss']:.4f}", f"{r['seconds']:.1f}")
    failed = [r for r in rows if r["status"] == "failed"]
    parts = [to_text(best),
             f"{share_learned(rows):.0%} of {len(rows)} runs reach >= {LEARNED_AT:.0%} exact-sequence accuracy; "
             f"{result.wall_seconds:.0f} s wall with {result.workers} {result.backend} worker(s)"]
    if failed:
        parts.append(f"{len(failed)} runs crashed, e.g. run {failed[0]['run']}: {failed[0]['error']}")
    if varied and rows:
        by_axis = Table(title=f"share of runs >= {LEARNED_AT:.0%} by setting")
        for name in ("setting", "value", "runs", "share", "best"):
            by_axis.add_column(name, justify="right")
        for name in varied:
            for value in plan.grid.axes()[name]:
                group = [r for r in rows if r[name] == value]
                done = [r["exact_match"] for r in group if r["status"] == "ok"]
                by_axis.add_row(name, f"{value:g}", str(len(group)), f"{share_learned(group):.0%}",
                                f"{max(done):.1%}" if done else "-")
        parts.append(to_text(by_axis))
    pairs = trend_pairs(result)
    if pairs and share_learned(rows) == 0:  # the evidence for "still improving" or not
        parts.append(to_text(_trend_table(result, pairs)))
    if result.interrupted:
        parts.append(f"interrupted: {len(rows)} of {result.total} runs finished")
    parts.append(f"verdict: {verdict(result)}")
    return "\n".join(parts)


def _trend_table(result: SweepResult, pairs: list[tuple[dict, dict]], top: int = 5) -> Any:
    """The evidence for "still improving" or not: the same settings on a shorter and a longer budget."""
    from rich.table import Table

    source = "the grid's two longest budgets" if not result.probes else "half the budget (probe runs) vs all of it"
    t = Table(title=f"trend: {source}")
    varied = [n for n, v in result.plan.grid.axes().items() if len(v) > 1 and n != result.plan.grid.budget]
    for name in (*varied, "epochs", "token acc", "test loss", "rising"):
        t.add_column(name, justify="right")
    for short, long in sorted(pairs, key=lambda pair: -pair[1]["token_accuracy"])[:top]:
        t.add_row(*(f"{long[n]:g}" for n in varied), f"{short['epochs']} -> {long['epochs']}",
                  f"{short['token_accuracy']:.1%} -> {long['token_accuracy']:.1%}",
                  f"{short['loss']:.3f} -> {long['loss']:.3f}", "yes" if rises(short, long) else "no")
    return t


def to_json(result: SweepResult) -> str:
    """Strict JSON (a non-finite loss becomes null): the plan, the verdict and one object per run."""
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    plan = result.plan
    meta = {"impl": plan.impl, "fault": plan.fault, "num_train": plan.num_train, "num_test": plan.num_test,
            "dtype": plan.dtype, "grid": plan.grid.axes(), "total_runs": result.total,
            "finished_runs": len(result.rows), "interrupted": result.interrupted, "workers": result.workers,
            "backend": result.backend, "wall_seconds": result.wall_seconds,
            "share_learned": share_learned(result.rows), "learned_at": LEARNED_AT, "verdict": verdict(result)}
    runs = [{k: clean(r[k]) for k in COLUMNS} for r in result.rows]
    probes = [{**{k: clean(r[k]) for k in COLUMNS}, "probe_of": r["probe_of"]} for r in result.probes]
    return json.dumps({"sweep": meta, "runs": runs, "probes": probes}, indent=2, allow_nan=False)


def to_csv(result: SweepResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in result.rows)
    return buffer.getvalue()


def write_results(result: SweepResult, out_dir: Path | str) -> list[Path]:
    """Write sweep.csv, sweep.json and sweep.png into ``out_dir``, each all or nothing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sweep.csv", out / "sweep.json", out / "sweep.png"]
    _atomic_write(paths[0], to_csv(result).encode())
    _atomic_write(paths[1], to_json(result).encode())
    png = io.BytesIO()
    plot(result).savefig(png, format="png", dpi=110)
    _atomic_write(paths[2], png.getvalue())
    return paths


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def plot(result: SweepResult) -> Any:
    """Heatmaps of exact-sequence accuracy over the two most varied settings, one panel per
    combination of the other varied settings (at most MAX_PANELS); seeds are averaged."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    plan = result.plan
    axes = {k: v for k, v in plan.grid.axes().items() if k != "seed"}
    order = sorted(axes, key=lambda name: -len(axes[name]))  # stable: ties keep grid order
    x_name, y_name = order[0], order[1]
    rest = [name for name in axes if name not in (x_name, y_name) and len(axes[name]) > 1]
    fixed = [name for name in axes if name not in (x_name, y_name) and len(axes[name]) == 1]
    panels = list(itertools.product(*(axes[name] for name in rest)))
    shown = panels[:MAX_PANELS]
    cols = min(3, len(shown))
    rows_n = -(-len(shown) // cols)
    xs, ys = axes[x_name], axes[y_name]
    width = max(7.0, cols * (0.8 * len(xs) + 1.8) + 1.2)
    fig = Figure(figsize=(width, rows_n * (0.55 * len(ys) + 1.9) + 1.6), layout="constrained")
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = None
    for i, panel in enumerate(shown):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        where = dict(zip(rest, panel, strict=True))
        values = np.full((len(ys), len(xs)), np.nan)
        labels = [["-"] * len(xs) for _ in ys]
        for (yi, y), (xi, x) in itertools.product(enumerate(ys), enumerate(xs)):
            cell = [r for r in result.rows if r[x_name] == x and r[y_name] == y
                    and all(r[k] == v for k, v in where.items())]
            done = [r for r in cell if r["status"] == "ok"]
            if done:
                values[yi, xi] = 100 * float(np.mean([r["exact_match"] for r in done]))
                # Token accuracy under it: a model that is learning shows it long before whole sequences.
                token = 100 * float(np.mean([r["token_accuracy"] for r in done]))
                labels[yi][xi] = f"{values[yi, xi]:.0f}\ntoken {token:.0f}%"
            elif cell:
                labels[yi][xi] = "crash"
            elif result.interrupted:
                labels[yi][xi] = "not run"
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=100, origin="lower", aspect="auto")
        for (yi, xi), text in np.ndenumerate(np.array(labels, dtype=object)):
            dark = np.isnan(values[yi, xi]) or values[yi, xi] > 60
            ax.text(xi, yi, text, ha="center", va="center", fontsize=10, color="black" if dark else "white")
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(_axis_label(x_name, plan))
        ax.set_ylabel(_axis_label(y_name, plan))
        if where:
            ax.set_title(", ".join(f"{_short(k)} = {v:g}" for k, v in where.items()), fontsize=10)
    fig.colorbar(image, ax=fig.axes, label="exact-sequence accuracy (%)", shrink=0.9)
    notes = [f"{_short(k)} = {axes[k][0]:g}" for k in fixed]
    seeds = plan.grid.seed
    notes.append(f"mean over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}")
    if len(panels) > len(shown):
        notes.append(f"first {len(shown)} of {len(panels)} panels shown; every run is in sweep.csv")
    fault = f", fault {plan.fault}" if plan.fault else ""
    lines = [f"INTERRUPTED: {len(result.rows)} of {result.total} runs finished; grey 'not run' cells never ran"]
    lines = lines if result.interrupted else []
    lines += [f"{plan.impl} model{fault}: exact-sequence accuracy (and token accuracy under it) on "
              f"{plan.num_test} held-out sequences",
             "; ".join(notes), f"verdict: {verdict(result)}"]
    fig.suptitle("\n".join(textwrap.fill(line, int(width * 11)) for line in lines), fontsize=10,
                 color="#c00000" if result.interrupted else "black")
    return fig


def _axis_label(name: str, plan: SweepPlan) -> str:
    return AXIS_LABELS[name].format(n=plan.num_train)


def _short(name: str) -> str:
    return {"num_heads": "heads", "num_layers": "blocks", "embed_dim": "embed_dim",
            "batch_size": "batch"}.get(name, name)
