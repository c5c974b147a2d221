"""bf16 training (CapturedStep(precision="bf16")): the packing kernels give the bytes of round to nearest even
(denormals flushed, NaN kept quiet), the GEMMs and the convolution weight gradient the fp32 sum of exact bf16
products, on every bf16 table (AVX512-BF16 and AMX where the CPU has them) at sizes that cut every tile; the
captured step in bf16 computes the fp32 step's gradients to bf16's precision, the same on AMX or AVX512-BF16 as on
the reference loops; training reaches the fp32 accuracy."""
import warnings

import numpy as np
import pytest

import lenet
import lenet.functional as F
from lenet import _core, nn, optim
from lenet.capture import CapturedStep
from models import dead_rows_model

BF16_ISAS = list(_core.bf16_isas())
FAST_BF16 = [isa for isa in BF16_ISAS if isa != "reference"]  # what the avx512 instruction set trains on, when any


def to_bf16(x):
    """numpy's rounding of float32 to bf16 bits, written independently of the kernels."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    denormal = (u & 0x7F800000) == 0
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    out = np.where(denormal, (u >> 16) & 0x8000, np.where(nan, (u >> 16) | 0x40, rounded))
    return out.astype(np.uint16)


def from_bf16(h):
    return (h.astype(np.uint32) << 16).view(np.float32)


def awkward(rng, shape):
    """Random floats with every rounding case: ties to even and odd, denormals, signed zeros, inf, NaN, and values
    that round up to inf."""
    x = (rng.standard_normal(shape) * 10).astype(np.float32)
    flat = x.reshape(-1)
    specials = np.array([0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38], dtype=np.float32)
    ties = (rng.integers(0, 2**15, 8).astype(np.uint32) << 16 | 0x8000).view(np.float32)
    extra = np.concatenate([specials, ties])[: flat.size]
    flat[rng.permutation(flat.size)[: extra.size]] = extra
    return x


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("rows", [1, 15, 16, 17, 33])
@pytest.mark.parametrize("cols", [1, 2, 15, 16, 17, 31, 32, 33, 70])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("stream", [False, True])  # the same bytes through cache-bypassing stores, where they happen
def test_convert_rounds_to_nearest_even(rng, isa, rows, cols, transposed, stream):
    src = awkward(rng, (cols, rows) if transposed else (rows, cols))
    got = _core.bf16_convert(isa, src, transposed, stream)
    assert np.array_equal(got, to_bf16(src.T if transposed else src))


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("K", [1, 2, 15, 31, 32, 33, 64])
@pytest.mark.parametrize("N", [1, 15, 16, 17, 48])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_pairs_interleave_two_rows(rng, isa, K, N, transposed, stream):
    src = awkward(rng, (N, K) if transposed else (K, N))
    ldb = -(-N // 16) * 16 if stream else N + 3  # (rows of whole 64-byte lines: every full vector can be streamed)
    got = _core.bf16_pairs(isa, src, transposed, ldb, stream)
    b = to_bf16(src.T if transposed else src)
    if K % 2:
        b = np.concatenate([b, np.zeros((1, N), np.uint16)])  # an odd K's last pair ends in 0
    want = np.full(((K + 1) // 2, ldb, 2), 0xFFFF, np.uint16)  # columns past N: never written
    want[:, :N, :] = b.reshape(-1, 2, N).transpose(0, 2, 1)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("M", [1, 16, 17, 33, 40])
@pytest.mark.parametrize("N", [1, 16, 17, 32, 50])
@pytest.mark.parametrize("K", [32, 64, 96])
@pytest.mark.parametrize("transposed", [False, True])
def test_gemm_sums_exact_products_in_fp32(rng, isa, M, N, K, transposed):
    m16, n16 = -(-M // 16) * 16, -(-N // 16) * 16
    a = to_bf16(rng.standard_normal((m16, K)).astype(np.float32))
    b = rng.standard_normal((K, n16)).astype(np.float32)
    pairs = _core.bf16_pairs("reference", b, False, n16)
    got = _core.bf16_gemm(isa, a, pairs, M, N, transposed)
    if transposed:  # C^T [N][M]
        got = got.T
    A, B = from_bf16(a)[:M].astype(np.float64), from_bf16(to_bf16(b))[:, :N].astype(np.float64)
    want = A @ B
    bound = np.abs(A) @ np.abs(B) * K * 2.0**-24  # fp32 summation of exact products, in any order
    assert got.shape == (M, N)
    assert np.all(np.abs(got - want) <= bound + 1e-30)


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("ic, oc, kh, kw, oh, ow, border", [
    (32, 32, 2, 2, 12, 12, 1),  # the MNIST-CoreML-Training graph's second layer
    (6, 16, 5, 5, 10, 10, 4),   # LeNet-5's
    (3, 17, 3, 2, 5, 3, 0),     # odd sizes: rows 18 (one tile and a remainder), oc past 16, K = 240 -> 256
])
def test_conv_weight_gradient_sums_exact_products_in_fp32(rng, isa, ic, oc, kh, kw, oh, ow, border):
    xpad = rng.standard_normal((ic, oh + kh - 1, ow + kw - 1, 16)).astype(np.float32)
    dy = np.zeros((oc, oh + 2 * border, ow + 2 * border, 16), np.float32)
    dy[:, border:border + oh, border:border + ow] = rng.standard_normal((oc, oh, ow, 16))
    got = _core.bf16_conv_dw(isa, xpad, dy, kh, kw, border, border)
    x, g = from_bf16(to_bf16(xpad)).astype(np.float64), from_bf16(to_bf16(dy)).astype(np.float64)
    g = g[:, border:border + oh, border:border + ow]
    want, bound = np.zeros((oc, ic, kh, kw)), np.zeros((oc, ic, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            patch = x[:, ky:ky + oh, kx:kx + ow]  # [ic][oh][ow][16]
            want[:, :, ky, kx] = np.einsum("oyxl,cyxl->oc", g, patch)
            bound[:, :, ky, kx] = np.einsum("oyxl,cyxl->oc", np.abs(g), np.abs(patch))
    assert np.all(np.abs(got - want) <= bound * oh * ow * 16 * 2.0**-24 + 1e-30)


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("ic, oc, kh, kw, oh, ow, pad", [
    (32, 32, 2, 2, 12, 12, 0),  # the MNIST-CoreML-Training graph's second layer
    (6, 16, 5, 5, 10, 10, 0),   # LeNet-5's
    (3, 17, 3, 2, 5, 4, 1),     # odd sizes, padded: K = 102 -> 128, ic past 0 rows of a tile
])
def test_conv_input_gradient_sums_exact_products_in_fp32(rng, isa, ic, oc, kh, kw, oh, ow, pad):
    w = rng.standard_normal((oc, ic, kh, kw)).astype(np.float32)
    dy = rng.standard_normal((oc, oh, ow, 16)).astype(np.float32)
    got = _core.bf16_conv_dx(isa, w, dy, pad, pad)
    W, g = from_bf16(to_bf16(w)).astype(np.float64), from_bf16(to_bf16(dy)).astype(np.float64)
    ih, iw = oh - 2 * pad + kh - 1, ow - 2 * pad + kw - 1
    # dx[c][y][x] = sum over o, ky, kx of w[o][c][ky][kx] * dy[o][y + pad - ky][x + pad - kx] (zero outside dy)
    big = np.zeros((oc, ih + kh + 2 * pad, iw + kw + 2 * pad, 16))
    big[:, kh:kh + oh, kw:kw + ow] = g
    want, bound = np.zeros((ic, ih, iw, 16)), np.zeros((ic, ih, iw, 16))
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = kh + pad - ky, kw + pad - kx  # dy's row y + pad - ky is big's row kh + y + pad - ky
            part = big[:, y0:y0 + ih, x0:x0 + iw]
            want += np.einsum("oc,oyxl->cyxl", W[:, :, ky, kx], part)
            bound += np.einsum("oc,oyxl->cyxl", np.abs(W[:, :, ky, kx]), np.abs(part))
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= bound * oc * kh * kw * 2.0**-24 + 1e-30)


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("M, N", [(8, 16), (17, 50), (40, 33)])
@pytest.mark.parametrize("kp", [[0, 2, 5, 6, 15], [31], [], list(range(1, 48, 2))], ids=["some", "last", "none", "odd"])
def test_gemm_sums_only_the_listed_pairs(rng, isa, M, N, kp):
    K = 96
    m16, n16 = -(-M // 16) * 16, -(-N // 16) * 16
    kp = [p for p in kp if p < K // 2]
    ks = sorted([2 * p for p in kp] + [2 * p + 1 for p in kp])
    a = to_bf16(rng.standard_normal((m16, K)).astype(np.float32))
    b = rng.standard_normal((K, n16)).astype(np.float32)
    if isa == "amx":  # sums every pair (bf16.h): the others' rows of B are 0, as its callers guarantee
        b[np.setdiff1d(np.arange(K), ks)] = 0.0
    got = _core.bf16_gemm(isa, a, _core.bf16_pairs("reference", b, False, n16), M, N, False, kp)
    A, B = from_bf16(a)[:M, ks].astype(np.float64), from_bf16(to_bf16(b))[ks, :N].astype(np.float64)
    bound = np.abs(A) @ np.abs(B) * K * 2.0**-24
    assert np.all(np.abs(got - A @ B) <= bound + 1e-30)
    with pytest.raises(ValueError, match="increasing"):
        _core.bf16_gemm(isa, a, _core.bf16_pairs("reference", b, False, n16), M, N, False, [3, 3])


def test_gemm_refuses_bad_shapes():
    a = np.zeros((16, 48), np.uint16)
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.bf16_gemm("reference", a, np.zeros((24, 16, 2), np.uint16), 16, 16)
    with pytest.raises(ValueError, match="not available"):
        _core.bf16_convert("fp8", np.zeros((2, 2), np.float32), False)


# Dense layers whose sizes cut every tile (in 1 x 27 x 27 / 4 -> ..., out 40 and 10); batches that leave B short of
# a multiple of 32.
def small_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 40),
                         nn.ReLU(), nn.Linear(40, 10))


SLOW_BF16 = "ignore:precision='bf16' runs on the reference loops:RuntimeWarning"  # (expected on other CPUs)


def step_grads(make, precision, images, idx, y, isa):
    lenet.seed(5)
    model = make()
    with lenet.use_isa(isa), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "precision='bf16' runs on the reference loops", RuntimeWarning)
        step = CapturedStep(model, precision=precision)
        for p in model.parameters():
            p.grad[...] = 7.0  # the step overwrites every gradient
        loss = step.run_images(images, idx, y)
    return loss, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("make", [small_model, lenet.CoreMLNet, dead_rows_model], ids=["small", "coreml", "dead"])
@pytest.mark.parametrize("batch", [16, 37, 128])
def test_bf16_step_computes_the_fp32_gradients_to_bf16_precision(isa, rng, make, batch):
    images = rng.integers(0, 256, (140, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(140)[:batch], rng.integers(0, 10, batch)
    loss32, g32 = step_grads(make, "fp32", images, idx, y, isa)
    loss16, g16 = step_grads(make, "bf16", images, idx, y, isa)
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    # Operands to 8 bits of mantissa (relative error 2^-9 each). The last layer's weight gradient takes the fp32
    # loss gradient and its bf16 input: within 1%. Below it the gradient goes through the bf16 input gradients and,
    # at this random start, sums that mostly cancel: within 10% in norm (measured: up to 6%; a wrong layout gives
    # about 100%).
    assert np.linalg.norm(g16[-2] - g32[-2]) <= 0.01 * np.linalg.norm(g32[-2])
    for a, b in zip(g16, g32):
        assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(b)
    assert not np.array_equal(g16[-2], g32[-2])  # the last dense layer really ran in bf16
    if make is dead_rows_model:  # the dead rows' products are left out (dense_bf16.cpp), and their gradients written 0
        assert not g16[2][:10].any() and not g16[2][:, :169].any() and g16[2][10:, 169:338].any()


@pytest.mark.skipif(not FAST_BF16, reason="neither AMX nor AVX512-BF16 on this CPU")
@pytest.mark.parametrize("make", [small_model, lenet.CoreMLNet, lenet.LeNet5], ids=["small", "coreml", "lenet5"])
@pytest.mark.parametrize("batch", [37, 128])
def test_bf16_step_on_avx512_matches_the_reference_loops(rng, make, batch):
    with lenet.use_isa("avx512"):  # AMX where the CPU has it, else AVX512-BF16
        assert _core.kernel_info()["bf16"]["isa"] == FAST_BF16[-1]
    images = rng.integers(0, 256, (140, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(140)[:batch], rng.integers(0, 10, batch)
    loss_fast, g_fast = step_grads(make, "bf16", images, idx, y, "avx512")
    loss_ref, g_ref = step_grads(make, "bf16", images, idx, y, "reference")
    assert loss_fast == pytest.approx(loss_ref, rel=1e-5)
    # The CoreML graph's second layer: the reference and AVX512-BF16 take its sparse fp32 backward, AMX its dense bf16
    # one (bf16.h, dense_over_sparse), which moves the convolutions' gradients by bf16's precision. LeNet-5's second
    # layer takes the sparse fp32 backward everywhere (its input gradient cannot run in bf16: TrainStep::bf16_conv).
    convs = 4 if make is lenet.CoreMLNet and FAST_BF16[-1] == "amx" else 0
    for a, b in zip(g_fast[convs:], g_ref[convs:]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    for a, b in zip(g_fast[:convs], g_ref[:convs]):
        assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(b)  # as bf16 against fp32 above


@pytest.mark.filterwarnings(SLOW_BF16)
@pytest.mark.parametrize("isa_name", ["reference", "avx512"])
def test_a_layer_takes_the_dense_bf16_backward_only_where_its_input_gradient_runs_in_bf16(rng, isa_name):
    # bf16.h, dense_over_sparse; TrainStep::bf16_conv. LeNet-5's second layer (6 -> 16, 5x5) keeps its sparse fp32
    # backward everywhere (its input gradient cannot run in bf16); the MNIST-CoreML-Training graph's second layer
    # (32 -> 32, 2x2) takes the dense bf16 one on AMX only.
    if isa_name not in lenet.available_isas():
        pytest.skip(f"{isa_name} does not run on this CPU")
    images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    with lenet.use_isa(isa_name):
        bf16_isa = _core.kernel_info()["bf16"]["isa"]
        for make, on_amx in ((lenet.LeNet5, False), (lenet.CoreMLNet, True)):
            lenet.seed(1)
            step = CapturedStep(make(), precision="bf16")
            assert step._step.bf16_conv_layers() == []  # before a step
            step.run_images(images, np.arange(64), rng.integers(0, 10, 64))
            # (the plan's layer 1: the second conv-pool layer)
            assert step._step.bf16_conv_layers() == ([1] if on_amx and bf16_isa == "amx" else []), make.__name__


def test_bf16_on_the_reference_loops_warns_that_it_is_slow():
    with lenet.use_isa("reference"), pytest.warns(RuntimeWarning, match="reference loops"):
        CapturedStep(small_model(), precision="bf16")


@pytest.mark.skipif(not FAST_BF16, reason="neither AMX nor AVX512-BF16 on this CPU")
def test_bf16_on_avx512_does_not_warn():
    with lenet.use_isa("avx512"), warnings.catch_warnings():
        warnings.simplefilter("error")
        CapturedStep(small_model(), precision="bf16")


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision"):
        CapturedStep(lenet.CoreMLNet(), precision="fp16")
    model = lenet.CoreMLNet()
    with pytest.raises(ValueError, match="captured"):
        lenet.Trainer(model, optim.Adam(model.parameters()), precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        lenet.Trainer(model, optim.Adam(model.parameters()), precision="half", captured=True)


@pytest.mark.filterwarnings(SLOW_BF16)
def test_coreml_graph_learns_in_bf16_on_mnist(mnist):
    lenet.seed(0)
    model = lenet.CoreMLNet()
    trainer = lenet.Trainer(model, optim.Adam(model.parameters(), lr=1e-3), batch_size=128, seed=0, log=None,
                            captured=True, precision="bf16")
    trainer.fit(mnist.train_images, mnist.train_labels, 1)
    assert trainer.evaluate(mnist.test_images, mnist.test_labels)["accuracy"] >= 0.975
