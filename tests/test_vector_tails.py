"""The vector tails test_kernels.py's shapes leave out at 4 floats a vector (NEON): lanes, lengths and reduction
lengths of 2 and 3 mod 4, alone and after a full vector. The same checks as test_kernels.py, on every table."""
import numpy as np
import pytest

from lenet import _core

import test_kernels as tk

TAIL_LANES = [2, 3, 6, 7]
TAIL_LENGTHS = [2, 3, 6, 10, 18]


@pytest.mark.parametrize("M,N", [(1, 1), (3, 2), (5, 7)])
def test_gemm_nt_reduction_tails(isa, rng, M, N):
    for K in TAIL_LENGTHS:
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((N, K), dtype=np.float32)
        tk.close(_core.gemm_nt(a, b), a.astype(np.float64) @ b.T.astype(np.float64))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", tk.POOL_CASES)
@pytest.mark.parametrize("lanes", TAIL_LANES)
def test_pool2d(isa, rng, kind, case, lanes):
    tk.test_pool2d(isa, rng, kind, case, lanes)


@pytest.mark.parametrize("case", tk.POOL_CASES)
@pytest.mark.parametrize("lanes", TAIL_LANES)
def test_maxpool_fused_relu(isa, rng, case, lanes):
    tk.test_maxpool_fused_relu(isa, rng, case, lanes)


@pytest.mark.parametrize("batch,classes", [(3, 10), (13, 10), (7, 3)])
@pytest.mark.parametrize("lanes", TAIL_LANES)
def test_softmax_cross_entropy(isa, rng, batch, classes, lanes):
    tk.test_softmax_cross_entropy(isa, rng, batch, classes, lanes)


@pytest.mark.parametrize("n", TAIL_LENGTHS)
def test_activations(isa, rng, n):
    tk.test_activations(isa, rng, n)


@pytest.mark.parametrize("n", TAIL_LENGTHS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update(isa, rng, n, nesterov):
    tk.test_sgd_update(isa, rng, n, nesterov)


@pytest.mark.parametrize("n", TAIL_LENGTHS)
def test_adam_update(isa, rng, n):
    tk.test_adam_update(isa, rng, n)
