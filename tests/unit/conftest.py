"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train on one thread: on shared CI cores, OpenMP threads spin against other processes."""
    import torch  # only the trainer tests pay for importing torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
