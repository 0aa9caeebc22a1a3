"""Shared test setup: small thread pools (CI has 2 cores) and deterministic torch."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    # TINYEXPORT_TEST_THREADS=1 runs the suite on one thread (CI's 2 cores are the default): the
    # suite must pass with either, since float reductions split differently across threads.
    torch.set_num_threads(int(os.environ.get("TINYEXPORT_TEST_THREADS", "2")))
    yield
