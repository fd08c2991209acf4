"""Fixtures of qlty_cpp's own tests: the original qlty (PyPI) beside it, and a thread count."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def original():
    """The Python original, for side-by-side checks (installed in the test environment)."""
    return pytest.importorskip("qlty")
