"""Shared fixtures: the instruction sets to test, and where real MNIST is (LENET_MNIST_DIR)."""
import os

import numpy as np
import pytest

import lenet

ISAS = lenet.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per instruction set this machine has (reference included)."""
    with lenet.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist():
    folder = os.environ.get("LENET_MNIST_DIR")
    if not folder or not os.path.isdir(folder):
        pytest.skip("real MNIST not available: set LENET_MNIST_DIR to the folder of the four IDX files")
    return lenet.data.load_mnist(folder, download=False)
