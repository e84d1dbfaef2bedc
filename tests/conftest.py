"""Shared test set-up: deterministic seeds, a small thread count (CI has 2 cores), and the
tiny dataset and GN run that the CLI, engine, config and weights tests train on."""

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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny generated dataset (4 train, 2 val images of 64 px), for runs with ``tiny_args``."""
    from detnorm.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(root, seed=0, num_train=4, num_val=2, image_size=64)
    return root


@pytest.fixture(scope="module")
def gn_run(tiny_data, tmp_path_factory):
    """A finished 2-step GN run on ``tiny_data`` (its output folder), once per test module."""
    from helpers.runs import tiny_args

    from detnorm.cli.train import main

    out = tmp_path_factory.mktemp("runs") / "gn"
    assert main([*tiny_args(tiny_data), "--norm", "gn", "--output-dir", str(out)]) == 0
    return out
