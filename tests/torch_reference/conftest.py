"""Every torch test here runs its tiny matrices on one CPU thread: faster, and steady when other
processes keep the cores busy (OpenMP's spinning workers otherwise slow them many times over)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from torch_reference.train import cpu_threads


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield
