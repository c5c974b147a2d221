"""The backend report: instruction sets, threads, the kernel-time counter and the measured FMA peak."""
import numpy as np
import pytest

import lenet
from lenet import _core


def test_kernels_report_names_every_op():
    info = lenet.kernels()
    assert info["isa"] in info["available"] and info["available"][0] == "reference"
    assert info["threads"] == lenet.get_num_threads()
    for op in ("conv2d_forward", "conv2d_backward", "linear_forward", "maxpool2d", "avgpool2d", "relu", "tanh",
               "softmax_cross_entropy", "sgd", "adam"):
        assert info["isa"] in info["ops"][op] or "reference" in info["ops"][op]


def test_use_isa_restores_the_previous_choice():
    before = lenet.kernels()["isa"]
    with lenet.use_isa("reference"):
        assert lenet.kernels()["isa"] == "reference"
        assert lenet.kernels()["ops"]["relu"] == "relu__reference"
    assert lenet.kernels()["isa"] == before


def test_kernel_seconds_counts_time_inside_ops():
    x = np.zeros((1 << 22,), np.float32)
    before = _core.kernel_seconds()
    for _ in range(20):
        _core.activation_forward("tanh", x)
    spent = _core.kernel_seconds() - before
    assert spent > 0
    t = _core.kernel_seconds()
    lenet.get_num_threads()  # not an op: not counted
    assert _core.kernel_seconds() == t


def test_fma_peak_orders_the_instruction_sets():
    # Best of 5 short runs per instruction set, taken in turns: a shared machine's slow moment (one run measured
    # AVX-512 at 179 against AVX2's 229 GFLOP/s on the Zen 4 VM) then hits one run of each, not one set's only run.
    peaks = dict.fromkeys(lenet.available_isas(), 0.0)
    for _ in range(5):
        for isa in peaks:
            with lenet.use_isa(isa):
                peaks[isa] = max(peaks[isa], _core.fma_peak_gflops(0.05))
    assert all(p > 0.1 for p in peaks.values())
    if "avx2" in peaks:
        assert peaks["avx2"] > 2 * peaks["reference"]
    if "avx512" in peaks:
        # Intel's server cores have two 512-bit FMA units (twice AVX2's peak); AMD's Zen 4 runs a 512-bit FMA as two
        # 256-bit halves (the same peak as AVX2). Either way AVX-512 is not slower than AVX2.
        assert peaks["avx512"] > 0.8 * peaks["avx2"]
    with pytest.raises(ValueError, match="seconds"):
        _core.fma_peak_gflops(0)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("n0, n1", [(4, 19), (2, 17), (1, 3), (7, 1), (0, 5), (3, 0)])
def test_pool_phases_run_every_task_once_and_later_tasks_may_wait_for_earlier_ones(threads, n0, n1):
    """A job in two phases (the training step's blocks, then its weight gradients, which wait for the blocks' work):
    every task runs once, on one of the threads, and a phase-1 task that waits for all of phase 0's work gets it, on
    any thread count, more threads than cores included (a thread takes a phase's tasks only once every task of the
    earlier phase is taken by a running thread; were it not so, every thread could end up waiting for a task no
    thread would take, and the job would never return)."""
    old = lenet.get_num_threads()
    try:
        lenet.set_num_threads(threads)
        for _ in range(20):
            trace = _core.pool_phases_trace(n0, n1, 20000)
            assert trace[:, 1].tolist() == [1] * (n0 + n1)
            assert set(trace[:, 0]) <= set(range(threads))
            assert (trace[:n0, 2] == -1).all() and (trace[n0:, 2] == n0).all()
    finally:
        lenet.set_num_threads(old)
