"""Training tests run torch single-threaded: on a busy 2-core machine torch's thread pool
busy-waits and a step gets 10x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
