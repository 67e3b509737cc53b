"""How many threads the numeric libraries may use: numpy's BLAS and, when it is loaded, torch.

The matrices of this project are small (64 x 8 x 32 by default). On several threads the
synchronisation costs more than the arithmetic, and when other processes keep the cores busy a
spinning BLAS or OpenMP worker waits for a core that is taken: a step then runs ten to forty times
slower. One thread is the fast and steady choice, so training, reports, the zoo and sweep workers
all run inside :func:`cpu_threads`.

The one override is the environment variable ``SCRATCHDIFF_THREADS`` (a positive integer), read
by :func:`default_threads` when no count is passed: ``SCRATCHDIFF_THREADS=2 scratchdiff train``.
It is read here, in one place, rather than passed down through every plan, because sweep workers
are separate processes that inherit the environment and nothing else.

torch is never imported here: it is pinned only when something else has already loaded it, so the
scratch side stays free of torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

ENV_VAR = "SCRATCHDIFF_THREADS"


def default_threads(environ: Mapping[str, str] | None = None) -> int:
    """``SCRATCHDIFF_THREADS`` when set, else 1. A value that is not a positive integer raises
    ValueError naming it."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not raw:
        return 1
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {raw!r}")
    return count


@contextlib.contextmanager
def cpu_threads(count: int | None = None) -> Iterator[None]:
    """Run numpy's BLAS (through threadpoolctl) and torch's CPU ops, if torch is loaded, on
    ``count`` threads (None: :func:`default_threads`), then restore both."""
    count = default_threads() if count is None else count
    if count < 1:
        raise ValueError(f"thread count must be a positive integer, got {count!r}")
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    with _blas_controller().limit(limits=count, user_api="blas"):
        if torch is not None:
            torch.set_num_threads(count)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded thread pools, made once: scanning the process's
    libraries costs about half a millisecond, more than a small report's stage. numpy's BLAS is
    loaded with numpy, before any call here; torch's pools are set through torch itself."""
    import numpy  # noqa: F401 - its BLAS must be loaded before the scan
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
