"""Shared test setup: small thread pools (CI has 2 cores) and deterministic torch."""

import contextlib
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    # TINYEXPORT_TEST_THREADS=1 runs the suite on one thread (CI's 2 cores are the default): the
    # suite must pass with either, since float reductions split differently across threads.
    torch.set_num_threads(int(os.environ.get("TINYEXPORT_TEST_THREADS", "2")))
    yield


@contextlib.contextmanager
def _fail_after(seconds: int):
    def expired(*_):
        raise AssertionError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def within():
    """``with within(5): ...`` fails the test instead of hanging (a FIFO read blocks forever)."""
    return _fail_after
