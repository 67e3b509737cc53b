"""What a report will cost before it starts: an estimate of its peak memory and its time.

The report holds, for every module on both sides, the inputs, outputs and gradients it compares,
so its memory grows with batch x layers x the per-layer activations; its time has a fixed part per
module (hooks, comparisons) and a part per activation element. The constants were fitted on the
default model (batch 16..2048, layers 1..32, on a 2-core machine: peak resident memory of the
process, and the time of ``run_report`` after imports); `benchmarks/report_budget.py` prints the
estimate beside the measurement. It is meant to be right within a factor of about two, and to err
on the large side, which is enough to refuse a run the machine cannot hold and to decide whether to
show a progress line. The CLI compares it with the memory the machine has free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scratch_model.config import TransformerConfig

BASE_BYTES = 300e6  # python, numpy, torch and rich imported, one small report
BYTES_PER_ELEMENT = 8 * 7  # float64, about 7 live copies of every activation (both sides, gradients, judgements)
PARAM_COPIES = 20  # parameters, gradients, optimizer state and copies on both sides
SECONDS_PER_ELEMENT = 2.5e-7
SECONDS_PER_LAYER = 0.02  # hooks and comparisons of a block's dozen modules


@dataclass(frozen=True)
class Estimate:
    bytes: float
    seconds: float

    def describe(self) -> str:
        return f"about {human_bytes(self.bytes)} of memory and {human_seconds(self.seconds)}"


def _activations_per_sequence(model: TransformerConfig) -> tuple[int, int]:
    """Activation elements one sequence keeps per block, and outside the blocks."""
    t, d, f, h, v = model.seq_len, model.embed_dim, model.ff_dim, model.num_heads, model.vocab_size
    per_layer = t * (10 * d + 3 * f) + 3 * h * t * t  # projections, norms, feed-forward; scores and softmax
    outside = t * (3 * d + 3 * v)  # embeddings, head, logits
    return per_layer, outside


def _parameters(model: TransformerConfig) -> int:
    d, f, v, t = model.embed_dim, model.ff_dim, model.vocab_size, model.seq_len
    return model.num_layers * (4 * d * d + 2 * d * f + 9 * d + f) + 2 * v * d + t * d + v


def report_estimate(model: TransformerConfig, batch_size: int, steps: int = 0) -> Estimate:
    """Peak memory (bytes) and time (seconds, imports left out) of one report on ``model``."""
    per_layer, outside = _activations_per_sequence(model)
    elements = batch_size * (model.num_layers * per_layer + outside)
    memory = BASE_BYTES + BYTES_PER_ELEMENT * elements + 8 * PARAM_COPIES * _parameters(model)
    seconds = (SECONDS_PER_ELEMENT * elements + SECONDS_PER_LAYER * model.num_layers) * (1 + steps / 3)
    return Estimate(memory, seconds)


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def human_seconds(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.3g} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.3g} hours"
    if s >= 120:
        return f"{s / 60:.3g} minutes"
    return f"{s:.2g} s"


def free_memory() -> float | None:
    """Bytes of memory available to a new process (Linux: MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
