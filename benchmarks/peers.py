"""Training-step speed and memory of the scratch models beside torch and optional peers.

One command prints the table of issue #13: the time of one training step (forward, mean token
cross-entropy, backward, Adam) in float32 for

- scratch class and scratch functional (this project's numpy autograd),
- torch on one thread (as the project runs it),
- HIPS autograd and JAX (jit on CPU, one thread), when installed (`pip install -e '.[bench]'`);
  a peer that is not installed is named as skipped,

at three configurations: default (1 layer, d 32, T 8, B 64), larger (4 layers, d 128, 8 heads,
ff 512, T 32, B 64) and batch 1 (T 6, d 32). The implementations take turns, one timed block
each per round in a shuffled order, so a busy machine slows them alike; each figure is a median
over rounds, each ratio the median of the per-round ratios to torch. The scratch models and torch
share one process; each peer runs in a process of its own, taking turns with torch there (JAX's
worker threads and HIPS autograd's memory churn slowed whatever ran beside them).

Then the peak memory of one training step at the larger configuration (each implementation in a
fresh process: the resident set's growth during the step, and for the numpy sides the peak that
tracemalloc sees), and how much the larger scratch step slows down while two busy processes
compete for the cores (busy processes paused and resumed between rounds, so quiet and busy rounds
interleave too).

    .venv/bin/python benchmarks/peers.py            # everything (about two minutes on two cores)
    .venv/bin/python benchmarks/peers.py --rounds 5 --configs default
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch_model.config import TransformerConfig  # noqa: E402
from scratch_model.threads import cpu_threads, default_threads  # noqa: E402

CONFIGS: dict[str, tuple[TransformerConfig, int]] = {
    "default": (TransformerConfig(), 64),
    "larger": (TransformerConfig(num_layers=4, embed_dim=128, num_heads=8, ff_dim=512, seq_len=32), 64),
    "batch1": (TransformerConfig(seq_len=6), 1),
}
IMPLS = ("scratch class", "scratch functional", "torch", "HIPS autograd", "JAX")
PEERS = ("HIPS autograd", "JAX")  # each timed in a process of its own, beside torch
LR = 1e-3
Step = Callable[[], None]


# --- one training step per implementation -------------------------------------------------------

def _batch(config: TransformerConfig, batch: int) -> tuple[np.ndarray, np.ndarray]:
    from scratch_model.data import make_reversal_data

    data = make_reversal_data(config, num_train=batch, num_test=1, seed=0)
    return next(data.batches(0, batch))


def _weights(config: TransformerConfig) -> dict[str, np.ndarray]:
    from scratch_model.functional import build_simple_transformer

    params, _ = build_simple_transformer(config, seed=0, dtype=np.float32)
    return {name: np.array(t.data) for name, t in params.items()}


def scratch_step(impl: str, config: TransformerConfig, batch: int) -> Step:
    from scratch_model.functional import build_simple_transformer
    from scratch_model.layers import ReversalTransformer
    from scratch_model.optim import Adam
    from scratch_model.train import cross_entropy

    tokens, targets = _batch(config, batch)
    if impl == "scratch class":
        model = ReversalTransformer(config, dtype=np.float32)
        model.load_arrays(_weights(config))
        params, forward = model.parameters(), model
    else:
        named, bound = build_simple_transformer(config, dtype=np.float32)
        params = list(named.values())

        def forward(tokens: np.ndarray):
            return bound(named, tokens)

    optimizer = Adam(params, lr=LR)

    def step() -> None:
        optimizer.zero_grad()
        cross_entropy(forward(tokens), targets).backward()
        optimizer.step()

    return step


def torch_step(config: TransformerConfig, batch: int) -> Step:
    import torch

    from differential.weights import load_into_torch
    from torch_reference.model import ReversalTransformer

    tokens, targets = (torch.as_tensor(a, dtype=torch.long) for a in _batch(config, batch))
    model = ReversalTransformer(config, dtype=torch.float32)
    load_into_torch(model, _weights(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    v = config.vocab_size

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1)).backward()
        optimizer.step()

    return step


def _array_model(xp, config: TransformerConfig) -> Callable:
    """The model and loss over a params dict in a numpy-like module ``xp`` (autograd.numpy or
    jax.numpy): the peers' version, written for them, post-LN like the reference."""
    h, hd = config.num_heads, config.head_dim

    def linear(p, name, x):
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def layer_norm(p, name, x):
        mu = xp.mean(x, axis=-1, keepdims=True)
        var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        return (x - mu) / xp.sqrt(var + config.ln_eps) * p[f"{name}.weight"] + p[f"{name}.bias"]

    def loss(p, tokens, onehot):
        b, t = tokens.shape
        x = p["embedding.weight"][tokens] + p["pos_embedding.weight"][:t]  # (B, T, D)
        for i in range(config.num_layers):
            pre = f"blocks.{i}"

            def heads(name, x=x, pre=pre):
                return xp.transpose(xp.reshape(linear(p, f"{pre}.attn.{name}", x), (b, t, h, hd)), (0, 2, 1, 3))

            q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
            scores = q @ xp.transpose(k, (0, 1, 3, 2)) / np.sqrt(hd)  # (B, h, T, T)
            e = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
            context = (e / xp.sum(e, axis=-1, keepdims=True)) @ v
            merged = xp.reshape(xp.transpose(context, (0, 2, 1, 3)), (b, t, h * hd))
            x = layer_norm(p, f"{pre}.ln1", x + linear(p, f"{pre}.attn.out_proj", merged))
            hidden = xp.maximum(linear(p, f"{pre}.ffn.fc1", x), 0.0)
            x = layer_norm(p, f"{pre}.ln2", x + linear(p, f"{pre}.ffn.fc2", hidden))
        logits = linear(p, "head", x)
        shifted = logits - xp.max(logits, axis=-1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
        return -xp.sum(log_probs * onehot) / (b * t)

    return loss


def _adam_numpy(params: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
    m = {k: np.zeros_like(a) for k, a in params.items()}
    v = {k: np.zeros_like(a) for k, a in params.items()}
    t = [0]

    def update(grads: dict[str, np.ndarray]) -> None:
        t[0] += 1
        c1, c2 = 1 - 0.9 ** t[0], 1 - 0.999 ** t[0]
        for k, g in grads.items():
            m[k] += 0.1 * (g - m[k])
            v[k] = 0.999 * v[k] + 0.001 * g * g
            params[k] -= (LR / c1) * m[k] / (np.sqrt(v[k] / c2) + 1e-8)

    return update


def _onehot(targets: np.ndarray, config: TransformerConfig) -> np.ndarray:
    return np.eye(config.vocab_size, dtype=np.float32)[targets]  # (B, T, V)


def hips_step(config: TransformerConfig, batch: int) -> Step:
    import autograd.numpy as anp
    from autograd import value_and_grad

    tokens, targets = _batch(config, batch)
    onehot = _onehot(targets, config)
    params = _weights(config)
    grad_fn = value_and_grad(_array_model(anp, config))
    update = _adam_numpy(params)

    def step() -> None:
        _, grads = grad_fn(params, tokens, onehot)
        update(grads)

    return step


def jax_step(config: TransformerConfig, batch: int) -> Step:
    import jax
    import jax.numpy as jnp

    tokens, targets = _batch(config, batch)
    onehot = jnp.asarray(_onehot(targets, config))
    tokens = jnp.asarray(tokens)
    grad_fn = jax.value_and_grad(_array_model(jnp, config))

    @jax.jit
    def train_step(params, m, v, t):
        _, grads = grad_fn(params, tokens, onehot)
        t = t + 1
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        m = jax.tree_util.tree_map(lambda m, g: m + 0.1 * (g - m), m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        params = jax.tree_util.tree_map(lambda p, m, v: p - (LR / c1) * m / (jnp.sqrt(v / c2) + 1e-8),
                                        params, m, v)
        return params, m, v, t

    state = [{k: jnp.asarray(a) for k, a in _weights(config).items()}]
    state += [jax.tree_util.tree_map(jnp.zeros_like, state[0]) for _ in range(2)]
    state.append(jnp.float32(0.0))

    def step() -> None:
        state[:] = train_step(*state)
        jax.block_until_ready(state[0])

    return step


def make_step(impl: str, config: TransformerConfig, batch: int) -> Step:
    if impl.startswith("scratch"):
        return scratch_step(impl, config, batch)
    if impl == "torch":
        return torch_step(config, batch)
    if impl == "HIPS autograd":
        return hips_step(config, batch)
    return jax_step(config, batch)


def available(impl: str) -> str | None:
    """None when ``impl`` can run here, else why not."""
    module = {"HIPS autograd": "autograd", "JAX": "jax"}.get(impl)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"`{module}` is not installed (pip install -e '.[bench]')"
    return None


# --- timing -------------------------------------------------------------------------------------

def _time_block(step: Step, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        step()
    return (time.perf_counter() - start) / count


def interleaved(steps: dict[str, Step], rounds: int, block_s: float = 0.05,
                between: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per step of each implementation, one timed block each per round, in a fresh seeded
    shuffle each round (a fixed rotation would give each implementation the same predecessor every
    round, and one peer's aftermath, JAX's worker threads or HIPS autograd's memory churn, would
    always fall on the same neighbour). ``between(round)`` runs before each round."""
    counts = {}
    for name, step in steps.items():
        step()  # warm up: optimizer state, caches, jit compilation
        counts[name] = max(1, round(block_s / max(_time_block(step, 1), 1e-6)))
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        if between is not None:
            between(r)
        order = names[:]
        random.Random(r).shuffle(order)
        for name in order:
            times[name].append(_time_block(steps[name], counts[name]))
    return times


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))


def speed_table(impls: list[str], configs: list[str], rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """{config: {impl: {"ms": median ms per step, "ratio": median ratio to torch}}}. The scratch
    models and torch share this process; each peer runs in a process of its own beside torch, so
    its runtime (XLA's worker threads, HIPS autograd's memory) cannot slow the others."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    own = [i for i in impls if i not in PEERS or impls == [i, "torch"] or impls == ["torch", i]]
    for name in configs:
        config, batch = CONFIGS[name]
        times = interleaved({impl: make_step(impl, config, batch) for impl in own}, rounds)
        table[name] = {impl: {"ms": 1e3 * statistics.median(times[impl]), "ratio": ratio(times, impl, "torch")}
                       for impl in own}
        gc.collect()
    for peer in (i for i in impls if i not in own):
        done = subprocess.run([sys.executable, __file__, "--impls", f"{peer},torch", "--configs", ",".join(configs),
                               "--rounds", str(rounds), "--no-memory", "--no-busy", "--json"],
                              capture_output=True, text=True, check=True)
        theirs = json.loads(done.stdout)["speed"]
        for name in configs:
            table[name][peer] = theirs[name][peer]
    return {name: {impl: table[name][impl] for impl in impls} for name in configs}


# --- memory (each implementation in a fresh process) --------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(impl: str, config_name: str) -> dict[str, float]:
    """Run in a fresh process: the resident set's growth during one training step (after two warm
    steps, peak reset through /proc/self/clear_refs) and, for numpy sides, tracemalloc's peak."""
    import tracemalloc

    config, batch = CONFIGS[config_name]
    step = make_step(impl, config, batch)
    step()
    step()
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set
    step()
    out = {"rss_mb": (_status_kib("VmHWM") - before) / 1024}
    if impl != "torch":
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step()
        out["traced_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
    return out


def memory_table(impls: list[str], config_name: str) -> dict[str, dict[str, float]]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    result = {}
    for impl in impls:
        if impl == "JAX":
            continue  # XLA allocates outside both measures; its figure would mean nothing here
        done = subprocess.run([sys.executable, __file__, "--memory-child", impl, "--configs", config_name],
                              capture_output=True, text=True, env=env, check=True)
        result[impl] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- busy machine -------------------------------------------------------------------------------

def busy_slowdown(impl: str, config_name: str, rounds: int, busy: int = 2,
                  threads: int | None = None) -> tuple[float, float, float]:
    """(quiet ms, busy ms, busy / quiet) of one implementation's step, rounds alternating between
    ``busy`` spinning processes paused and running; ``threads``: BLAS and torch threads for it
    (None: as pinned for the rest of the run)."""
    if threads is not None:
        with cpu_threads(threads):
            return busy_slowdown(impl, config_name, rounds, busy)
    config, batch = CONFIGS[config_name]
    step = make_step(impl, config, batch)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    quiet: list[float] = []
    loaded: list[float] = []
    try:
        time.sleep(0.2)
        step()
        count = max(1, round(0.1 / _time_block(step, 1)))
        for r in range(2 * rounds):
            sig = signal.SIGSTOP if r % 2 == 0 else signal.SIGCONT
            for p in spinners:
                os.kill(p.pid, sig)
            time.sleep(0.05)
            (quiet if r % 2 == 0 else loaded).append(_time_block(step, count))
    finally:
        for p in spinners:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()
    q, b = statistics.median(quiet), statistics.median(loaded)
    return 1e3 * q, 1e3 * b, statistics.median(x / y for x, y in zip(loaded, quiet, strict=True))


# --- output -------------------------------------------------------------------------------------

def markdown(table: dict, impls: list[str], memory: dict | None, busy: tuple | None, skipped: dict[str, str],
             rounds: int, threads: int) -> str:
    heads = {"default": "default (1 layer, d 32, T 8, B 64)",
             "larger": "larger (4 layers, d 128, 8 heads, ff 512, T 32, B 64)",
             "batch1": "batch 1 (T 6, d 32)"}
    configs = list(table)
    lines = ["| training step, float32 | " + " | ".join(heads[c] for c in configs) + " |",
             "|---|" + "---|" * len(configs)]
    for impl in impls:
        cells = [f"{table[c][impl]['ms']:.2f} ms ({table[c][impl]['ratio']:.2f}x torch)" for c in configs]
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines.append("")
    if memory:
        lines.append("| peak memory of one step, larger config | resident set growth | tracemalloc peak |")
        lines.append("|---|---|---|")
        torch_rss = memory.get("torch", {}).get("rss_mb")
        for impl, m in memory.items():
            rel = f" ({m['rss_mb'] / torch_rss:.2f}x torch)" if torch_rss else ""
            traced = f"{m['traced_mb']:.1f} MB" if "traced_mb" in m else "-"
            lines.append(f"| {impl} | {m['rss_mb']:.1f} MB{rel} | {traced} |")
        if "JAX" in impls:
            lines.append("| JAX | not measured: XLA's buffers escape both measures | - |")
        lines.append("")
    pinned_quiet = next(iter(busy.values()))[0] if busy else None
    for label, (quiet, loaded, slower) in (busy or {}).items():
        line = (f"Larger-config step with two busy processes, {label}: {quiet:.1f} ms quiet, {loaded:.1f} ms busy "
                f"({slower:.2f}x")
        if "not pinned" in label and pinned_quiet:
            line += f"; {loaded / pinned_quiet:.1f}x the pinned step's quiet time"
        lines.append(line + ").")
    for impl, why in skipped.items():
        lines.append(f"Skipped {impl}: {why}.")
    lines.append(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                 f"numpy {np.__version__}; BLAS and torch on {threads} thread(s); medians of {rounds} "
                 f"interleaved rounds; 1-minute load average before the run "
                 f"{os.getloadavg()[0]:.2f}.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="default,larger,batch1",
                        help="comma-separated configurations to time: default, larger, batch1 (default: all)")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"comma-separated implementations (default: all of {', '.join(IMPLS)}; peers that "
                             "are not installed are skipped and named)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per configuration (default: 15)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-busy", action="store_true", help="skip the busy-machine measurement")
    parser.add_argument("--busy-unpinned", action="store_true",
                        help="also time the busy-machine case with numpy's BLAS on every core, as it runs when not "
                             "pinned (slow: seconds per step)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of markdown")
    parser.add_argument("--memory-child", metavar="IMPL", default=None,
                        help="internal: measure IMPL's step memory in this process and print it as JSON")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    for c in args.configs:
        if c not in CONFIGS:
            parser.error(f"unknown configuration {c!r}; choose from {', '.join(CONFIGS)}")
    for i in args.impls:
        if i not in IMPLS:
            parser.error(f"unknown implementation {i!r}; choose from {', '.join(IMPLS)}")
    if "torch" not in args.impls:
        parser.error("--impls must include torch: every ratio is to torch")
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = default_threads()
    # JAX (XLA) on one thread too, as torch and numpy; set before jax is imported.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import torch  # noqa: F401 - loaded before cpu_threads, so that it pins torch as well

    if args.memory_child:
        with cpu_threads(threads):
            print(json.dumps(memory_child(args.memory_child, args.configs[0])))
        return 0
    skipped = {impl: why for impl in args.impls if (why := available(impl))}
    impls = [i for i in args.impls if i not in skipped]
    with cpu_threads(threads):
        table = speed_table(impls, args.configs, args.rounds)
        memory = None if args.no_memory else memory_table(impls, "larger")
        busy = None
        if not args.no_busy:
            rounds = max(3, args.rounds // 3)
            busy = {f"scratch class ({threads} thread)": busy_slowdown("scratch class", "larger", rounds)}
            if "torch" in impls:
                busy[f"torch ({threads} thread)"] = busy_slowdown("torch", "larger", rounds)
            if args.busy_unpinned:
                cores = os.cpu_count() or 2
                busy[f"scratch class, BLAS on {cores} threads (not pinned)"] = busy_slowdown(
                    "scratch class", "larger", 3, threads=cores)
    if args.json:
        print(json.dumps({"speed": table, "memory": memory, "busy": busy, "skipped": skipped}, indent=1))
    else:
        print(markdown(table, impls, memory, busy, skipped, args.rounds, threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
