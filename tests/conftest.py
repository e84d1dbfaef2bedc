"""Shared test set-up: deterministic seeds and a small thread count (CI has 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
