"""The sweep on real cluster schedulers: a Dask LocalCluster on the loopback interface (Dask is in the
`test` extra, so this runs in the default suite and in CI), and Ray when it is installed (the optional
`ray` extra; skipped otherwise). Each must train every run on the cluster and give the very figures of
an in-process sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from differential import sweep
from differential.cli import main
from differential.sweep import Grid, SweepPlan

PLAN = SweepPlan(Grid(lr=(0.003, 0.01), epochs=(1,), embed_dim=(16,), num_heads=(2,), seed=(0, 1)),
                 num_train=32, num_test=64)
FLAGS = ["--lr", "0.003,0.01", "--epochs", "1", "--embed-dim", "16", "--heads", "2", "--seed", "0,1",
         "--num-train", "32", "--num-test", "64"]


def figures(result: sweep.SweepResult) -> list[tuple]:
    return [(r["run"], r["status"], r["exact_match"], r["token_accuracy"], r["loss"]) for r in result.rows]


def test_dask_sweep_on_a_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distributed import LocalCluster

    in_process = sweep.run_sweep(PLAN, workers=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tcp",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        result = sweep.run_sweep(PLAN, workers=2, backend="dask", backend_options={"scheduler_host": address})
        code = main(["sweep", *FLAGS, "--backend", "dask", "--scheduler", address, "--workers", "2",
                     "--out", str(tmp_path)])
        finished = {name: prefix.state_counts["memory"] for name, prefix in cluster.scheduler.task_prefixes.items()}
    assert figures(result) == figures(in_process) and {r["status"] for r in result.rows} == {"ok"}
    # Every run of both sweeps went through the cluster's scheduler and finished on a worker.
    assert sum(n for name, n in finished.items() if "run_one" in name) == 2 * len(PLAN.runs())
    out = capsys.readouterr().out
    assert code == 1 and "2 dask worker(s)" in out  # tiny runs learn nothing: exit 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]


def test_dask_scheduler_that_is_not_there_fails_with_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["sweep", *FLAGS, "--backend", "dask", "--scheduler", f"tcp://127.0.0.1:{port}",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"127.0.0.1:{port}" in err, err


def test_ray_sweep_when_ray_is_installed() -> None:
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install -e '.[ray]'); not installed")
    in_process = sweep.run_sweep(PLAN, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = sweep.run_sweep(PLAN, workers=2, backend="ray")
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert figures(result) == figures(in_process)
