"""Shared test set-up: deterministic seeds and a small thread count (CI has 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _image_check_cache(tmp_path_factory, monkeypatch):
    """The setup-time image check caches under $DETNORM_CACHE: keep it inside pytest's tmp."""
    monkeypatch.setenv("DETNORM_CACHE", str(tmp_path_factory.getbasetemp() / "detnorm-cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run the test at one intra-op thread (restored after), for results that depend on the
    order in which fp32 sums are taken."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
