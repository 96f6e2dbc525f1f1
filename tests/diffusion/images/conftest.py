"""The image-model tests run torch on one thread: the convolutions are small, and on a busy
2-core machine torch's 2-thread parallel regions stall when a core is taken away (measured
10-40x slower); training is also only bitwise reproducible at a fixed thread count."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
