"""The checks around the module walk: the batch and its sanity, the loss, per-module summaries,
gradient flow, the optimizer step, training side by side, and isolated mode.

Each takes the captures or sides and returns plain data for the report; nothing here prints.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from differential.capture import Capture
from differential.compare import compare, matches_zero, verdicts
from differential.diagnose import display_path
from differential.localize import Check, ModuleResult
from differential.sides import Side
from scratch_model import data as data_module

if TYPE_CHECKING:
    from differential.options import ReportOptions


def batches(options: ReportOptions) -> list[tuple[np.ndarray, np.ndarray]]:
    count = max(options.steps, 1)
    data = data_module.make_reversal_data(options.model, num_train=options.batch_size * count, num_test=1,
                                          seed=options.seed)
    return list(data.batches(0, options.batch_size))


def mask(options: ReportOptions, length: int) -> np.ndarray | None:
    if options.mask == "none":
        return None
    return np.tril(np.ones((length, length), dtype=bool))  # (T, T): query i sees keys 0..i


def data_sanity(options: ReportOptions, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Checks on the batch itself, written independently of the data code they check."""
    tokens, targets = batches[0]
    config = options.model
    checks = {
        "targets_are_reversed_inputs": bool(np.array_equal(targets, tokens[:, ::-1])),
        "tokens_in_range": bool(tokens.min() >= 1 and tokens.max() <= config.vocab_size - 1),
        "integer_tokens": bool(np.issubdtype(tokens.dtype, np.integer)),
        "shapes_consistent": tokens.shape == targets.shape and tokens.shape[1] <= config.seq_len,
    }
    return {"checks": checks, "ok": all(checks.values()), "batch_shape": list(tokens.shape),
            "token_range": [int(tokens.min()), int(tokens.max())], "vocab_size": config.vocab_size,
            "logits_shape": None}


def loss_check(actual: Capture, expected: Capture, noise: Capture | None) -> dict[str, Any]:
    """The joint run's loss: its value, and its own backward (the gradient with respect to the logits)."""
    m = compare(np.array(actual.loss), np.array(expected.loss), None if noise is None else np.array(noise.loss))
    if not actual.logits_grad_known:
        return {"actual": actual.loss, "expected": expected.loss, "match": m.match, "metrics": m.to_dict(),
                "grad_match": None, "grad_metrics": None}
    g = compare(actual.logits_grad, expected.logits_grad, None if noise is None else noise.logits_grad)
    return {"actual": actual.loss, "expected": expected.loss, "match": m.match, "metrics": m.to_dict(),
            "grad_match": g.match, "grad_metrics": g.to_dict()}


def _phase_summary(checks: list[Check], missing: bool) -> dict[str, Any]:
    if missing:
        return {"status": "diverged", "worst": None, "tensors": {}}
    if not checks:
        return {"status": "not_checked", "worst": None, "tensors": {}}
    worst = max(checks, key=lambda c: (not c.match, c.metrics.max_abs or 0.0))  # a mismatch, if there is one
    return {"status": "match" if worst.match else "diverged",
            "worst": {"tensor": worst.tensor, **worst.metrics.to_dict()},
            "tensors": {c.tensor: c.match for c in checks}}


def depth(path: str, expected: Capture) -> int:
    """How many recorded modules contain ``path`` (the root contains everything)."""
    calls = expected.calls
    parts = path.split("#")[0].split(".")
    # the proper dotted prefixes of the module's name that were recorded, and the root
    inside = sum(1 for i in range(1, len(parts)) if ".".join(parts[:i]) in calls)
    return inside + (path != "" and "" in calls)


def module_entry(res: ModuleResult, actual_side: Side, oracle_side: Side, depth: int) -> dict[str, Any]:
    return {
        "module": display_path(res.path),
        "depth": depth,
        "scratch_source": actual_side.source(res.path) if not res.missing else None,
        "reference_source": oracle_side.source(res.path),
        "forward": _phase_summary(res.forward, res.missing),
        "backward": _phase_summary(res.backward, res.missing),
        "param_grad": _phase_summary(res.param_grad, res.missing),
    }


def gradient_flow(results: dict[str, ModuleResult], actual: Capture, expected: Capture,
                   noise: Capture | None) -> list[dict[str, Any]]:
    """Per parameter: has a gradient, non-zero, norm, matches the reference (the verdicts the
    module comparison already reached; parameters of modules it did not reach are compared here).

    Every yes/no column is judged against the reference with the report's tolerance model, so a
    "no" is always a disagreement: a gradient that is zero where the reference's is zero too (up
    to round-off, e.g. a key-projection bias) is not "missing"."""
    agree: dict[str, bool] = {}
    for res in results.values():
        base = res.path.split("#")[0]
        for check in res.param_grad:
            short = check.tensor[len("param_grad["):-1]
            name = f"{base}.{short}" if base else short
            agree[name] = agree.get(name, True) and check.match
    rest = [name for name in expected.param_grads if name not in agree]
    pairs = [(actual.param_grads.get(n), expected.param_grads[n], noise.param_grads.get(n) if noise else None,
              _grad_scale(n, expected)) for n in rest]
    agree.update(zip(rest, verdicts(pairs), strict=True))
    rows = []
    for name, ref in expected.param_grads.items():
        got = actual.param_grads.get(name)
        # a "no" stands only where the reference's gradient is not zero (up to its round-off)
        nonzero = (got is not None and bool(got.any())) or ref is None or \
            matches_zero(ref, noise.param_grads.get(name) if noise else None, _grad_scale(name, expected))
        rows.append({"parameter": name, "has_grad": got is not None or ref is None, "nonzero": nonzero,
                     "norm": None if got is None else math.sqrt(float(np.vdot(got, got))),
                     "reference_norm": None if ref is None else math.sqrt(float(np.vdot(ref, ref))),
                     "matches_reference": agree[name]})
    return rows


def _grad_scale(name: str, expected: Capture) -> float:
    """The output-gradient scale of the module a parameter is charged to (its round-off scale)."""
    from differential.capture import nearest_recorded

    call = expected.calls.get(nearest_recorded(name.rpartition(".")[0], expected.calls))
    if call is None or call.grad_output is None:
        return 0.0
    return float(np.max(np.abs(call.grad_output), initial=0.0))


def optimizer_phase(actual_side: Side, oracle_side: Side, noise_side: Side | None, actual: Capture,
                     expected: Capture, noise: Capture | None, options: ReportOptions
                     ) -> tuple[list[Check], list[dict[str, Any]]]:
    """One optimizer step with the reference's gradients on both sides, compared parameter by
    parameter; plus the naive question "did the weight change after a step with its own gradients".
    A "no" in a row is a disagreement: a parameter the reference's step leaves (numerically)
    unchanged may stay unchanged here too. Returns a check (metrics and both updates) for every
    parameter whose update disagrees, and one row per parameter."""
    # Each step's parameters are reduced to what the checks need as soon as it returns (a step holds
    # a copy of every parameter, and the scratch optimizer's flat state and temporaries on top)
    before, ref_grads, kind, lr = actual.params, expected.param_grads, options.optimizer, options.lr
    own_stepped = actual_side.optimizer_step(actual.param_grads, kind, lr, current=before)
    changed_by_own = dict(zip(own_stepped, _differ_each(list(own_stepped.values()),
                                                        [before[n] for n in own_stepped]), strict=True))
    del own_stepped
    stepped = actual_side.optimizer_step(ref_grads, kind, lr, current=before)
    updates = {n: a - before[n] for n, a in stepped.items()}
    del stepped
    ref_updates = {n: a - expected.params[n] for n, a in oracle_side.optimizer_step(ref_grads, kind, lr).items()}
    names = list(ref_updates)
    noise_updates = dict.fromkeys(names) if noise_side is None else \
        {n: a - before[n] for n, a in noise_side.optimizer_step(ref_grads, kind, lr).items()}
    pairs = [(updates.get(n), ref_updates[n], noise_updates[n], 0.0) for n in names]
    checks, rows = [], []
    moved = _differ_each([updates.get(n) for n in names])
    ref_moved = _differ_each([ref_updates[n] for n in names])
    # the verdicts alone for every parameter; the metrics (and the arrays) only where they disagree,
    # which is all a finding reads
    for k, (name, pair, agrees) in enumerate(zip(names, pairs, verdicts(pairs), strict=True)):
        update, ref_update = pair[0], pair[1]
        if not agrees:
            checks.append(Check(f"param[{name}]", compare(*pair), update, ref_update))
        changed, updated = changed_by_own.get(name, False), moved[k]
        if not (changed and updated):  # a "no" stands only where the reference step moves it (past round-off)
            stays = matches_zero(ref_update, noise_updates[name])
            changed, updated = changed or stays, updated or stays
        rows.append({"parameter": name, "changed_after_step": changed, "update_matches_reference": agrees,
                     "updated_by_optimizer": updated, "reference_updated": ref_moved[k]})
    return checks, rows


def _differ_each(arrays: list[np.ndarray | None], others: list[np.ndarray | None] | None = None) -> list[bool]:
    """``[bool(np.not_equal(x, y).any()) ...]`` for the pairs of ``arrays`` and ``others``; without
    ``others`` (or where one is None), whether each array has a value that is not 0. None and empty
    arrays are False; an array of another shape than its pair differs from it. Pairs of one shape are
    judged all at once, laid end to end (a few numpy calls, not two per parameter)."""
    out = [False] * len(arrays)
    together = []
    for i, x in enumerate(arrays):
        if x is None or np.size(x) == 0:
            continue
        y = None if others is None else others[i]
        if others is None or (y is not None and np.shape(x) == np.shape(y)):
            together.append(i)
        else:
            out[i] = y is not None or bool(np.not_equal(x, 0).any())  # y of another shape: it differs
    if together:
        starts = np.cumsum([0] + [np.size(arrays[i]) for i in together[:-1]])
        flat = np.concatenate([np.ravel(arrays[i]) for i in together])
        differs = flat != 0 if others is None else flat != np.concatenate([np.ravel(others[i]) for i in together])
        for i, d in zip(together, np.logical_or.reduceat(differs, starts), strict=True):
            out[i] = bool(d)
    return out


def training_phase(actual_side: Side, oracle_side: Side, noise_side: Side | None,
                    batches: list[tuple[np.ndarray, np.ndarray]], options: ReportOptions) -> dict[str, Any]:
    if options.steps == 0:
        return {"steps": 0, "status": "not_checked", "first_divergent_step": None, "first_divergent_what": None,
                "loss_actual": [], "loss_expected": []}
    start = actual_side.params()
    losses, params = actual_side.train_steps(batches, options.optimizer, options.lr)
    ref_losses, ref_params = oracle_side.train_steps(batches, options.optimizer, options.lr)
    noise_losses, noise_params = (noise_side.train_steps(batches, options.optimizer, options.lr)
                                  if noise_side else (None, None))
    for side in (actual_side, oracle_side, noise_side):
        if side is not None:
            side.load(start)
    first, what = None, None
    for step in range(len(batches)):
        n_loss = None if noise_losses is None else np.array(noise_losses[step])
        if not compare(np.array(losses[step]), np.array(ref_losses[step]), n_loss).match:
            first, what = step + 1, "loss"
            break
        # every parameter is judged on the scale of the whole model's parameters: a parameter whose
        # gradient is zero up to round-off (a key bias under softmax) moves by Adam-amplified round-off
        # on each side, far below anything a fault does but far above its own tiny values
        scale = max((float(np.max(np.abs(p), initial=0.0)) for p in ref_params[step].values()), default=0.0)
        names = list(ref_params[step])
        agree = verdicts([(params[step][n], ref_params[step][n],
                           None if noise_params is None else noise_params[step][n], scale) for n in names])
        bad = [n for n, ok in zip(names, agree, strict=True) if not ok]
        if bad:
            first, what = step + 1, f"parameter {bad[0]}"
            break
    return {"steps": options.steps, "status": "match" if first is None else "diverged",
            "first_divergent_step": first, "first_divergent_what": what,
            "loss_actual": [float(f"{x:.10g}") for x in losses],
            "loss_expected": [float(f"{x:.10g}") for x in ref_losses]}
