"""Every op on every instruction set this machine has, against independent numpy definitions, on shapes that
hit every tail of every vector width (lanes 1, 5, 16, 17; odd widths, channel counts and strides)."""
import numpy as np
import pytest

import lenet
from lenet import _core
from lenet.tensor import _from_lanes, _to_lanes

import reference as ref

LANES = [1, 5, 16, 17]


def close(actual, expected, tol=2e-5):
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


# ---- GEMM microkernels: every M, N, K around the register tiles (6x64 or 8x48 / 6x16 / 4x4 / 3x3) -------------
@pytest.mark.parametrize("M", [1, 2, 3, 5, 6, 7, 8, 12, 13, 16, 25])
@pytest.mark.parametrize("N", [1, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 130])
def test_gemm_nn(isa, rng, M, N):
    for K in (1, 4, 17, 33, 70):  # 33, 70: A^T is taken in chunks of 32 k (gemm.h kTransposedKChunk) plus a rest
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        close(_core.gemm_nn(a, b), a.astype(np.float64) @ b)
        at = np.ascontiguousarray(a.T)
        close(_core.gemm_nn(at, b, trans_a=True), a.astype(np.float64) @ b)
        # over a list of k only (a dense layer's rows of B that are not all zero): every other k, and a few
        ks = np.arange(0, K, 2) if K > 4 else np.arange(K)[::-1]
        for sub in (ks, ks[:3], ks[:0]):
            want = a[:, sub].astype(np.float64) @ b[sub]
            close(_core.gemm_nn(a, b, ks=sub), want)
            close(_core.gemm_nn(at, b, trans_a=True, ks=sub), want)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 7, 9])
@pytest.mark.parametrize("N", [1, 2, 3, 4, 5, 6, 8, 11])
def test_gemm_nt(isa, rng, M, N):
    for K in (1, 7, 8, 15, 16, 17, 100):
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((N, K), dtype=np.float32)
        close(_core.gemm_nt(a, b), a.astype(np.float64) @ b.T.astype(np.float64))


# ---- convolution ---------------------------------------------------------------------------------------------
CONV_CASES = [  # (batch, in_ch, H, W, out_ch, kernel, stride, padding)
    (3, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2)),    # LeNet-5 conv1
    (4, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),   # LeNet-5 conv2
    (2, 1, 28, 28, 32, (3, 3), (1, 1), (0, 0)),   # CoreMLNet conv1
    (2, 32, 13, 13, 32, (2, 2), (1, 1), (0, 0)),  # CoreMLNet conv2
    (2, 3, 9, 11, 5, (3, 2), (2, 3), (1, 1)),     # odd strides, rectangular everything
    (1, 2, 7, 13, 7, (3, 3), (1, 1), (2, 1)),     # widths 13+2 -> tails of every pixel tile
    (2, 5, 6, 6, 9, (1, 1), (1, 1), (0, 0)),      # 1x1
    (2, 4, 8, 8, 3, (4, 4), (4, 4), (0, 0)),      # non-overlapping windows
    (2, 3, 9, 8, 7, (3, 2), (1, 1), (1, 0)),      # narrow kernels: dW two kernel rows at a time, and an odd one
    (2, 4, 6, 7, 5, (2, 1), (1, 1), (1, 0)),
    (2, 3, 7, 11, 18, (3, 3), (1, 1), (1, 1)),    # 6-channel tiles (18 channels: 6s, not 4s), a 2-pixel tail
    (2, 6, 9, 10, 4, (3, 3), (1, 1), (0, 0)),     # and in the input gradient (6 channels), a 1-pixel tail
    (2, 4, 7, 6, 5, (2, 2), (1, 1), (1, 0)),      # dX through Winograd at 16 lanes: 4 channels (a tile of 3 and 1),
    (2, 5, 6, 9, 4, (2, 2), (1, 1), (0, 1)),      # 5 (3 and 2), odd and even heights and widths
]


def conv_case(rng, case, lanes):
    B, C, H, W, O, k, stride, pad = case
    x = rng.standard_normal((B, C, H, W), dtype=np.float32)
    w = rng.standard_normal((O, C) + k, dtype=np.float32) * 0.3
    b = rng.standard_normal(O, dtype=np.float32)
    return x, _to_lanes(x, lanes), w, b, stride, pad


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("lanes", LANES)
def test_conv2d_forward(isa, rng, case, lanes):
    x, xl, w, b, stride, pad = conv_case(rng, case, lanes)
    expected = ref.conv2d(x, w, b, stride, pad)
    for algo in ("auto", "im2col"):
        y = _core.conv2d_forward(xl, w, b, stride, pad, algo)
        close(_from_lanes(y, len(x)), expected)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[6] == (1, 1)])
def test_conv2d_direct_matches_numpy(isa, rng, case):
    """The shape-specialised kernels (forward, dW, and dX as a convolution of padded dY), on every table."""
    x, xl, w, b, stride, pad = conv_case(rng, case, 16)
    y = _core.conv2d_forward(xl, w, b, stride, pad, "direct")
    close(_from_lanes(y, len(x)), ref.conv2d(x, w, b, stride, pad))
    check_conv_backward(rng, x, xl, w, b, stride, pad, 16, "direct")


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[6] == (1, 1)])
def test_conv2d_direct_one_sample(isa, rng, case):
    """The one-sample (lanes 1) direct forward, vectorised along the output row."""
    x, xl, w, b, stride, pad = conv_case(rng, case, 1)
    y = _core.conv2d_forward(xl, w, b, stride, pad, "direct")
    close(_from_lanes(y, len(x)), ref.conv2d(x, w, b, stride, pad))
    with pytest.raises(ValueError, match="16 lanes"):
        _core.conv2d_backward(xl, w, y, np.zeros_like(w), None, stride, pad, True, "direct")


@pytest.mark.parametrize("width", [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 63, 64, 65, 70])
def test_conv2d_direct_one_sample_row_tails(isa, rng, width):
    """Output rows of every length around 1-4 vectors of 4, 8 and 16 floats, and past one chunk of 4 vectors;
    channel counts around the register tile (1 to 9 output channels)."""
    for oc in (1, 3, 9):
        x = rng.standard_normal((1, 2, 3, width + 2), dtype=np.float32)
        w = rng.standard_normal((oc, 2, 3, 3), dtype=np.float32)
        b = rng.standard_normal(oc, dtype=np.float32)
        for pad in ((0, 0), (1, 2)):
            y = _core.conv2d_forward(_to_lanes(x, 1), w, b, (1, 1), pad, "direct")
            close(_from_lanes(y, 1), ref.conv2d(x, w, b, (1, 1), pad))


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 9, 12, 15])
def test_conv2d_direct_one_sample_narrow_rows(isa, rng, width):
    """Rows narrower than a vector with channel counts that fill whole vectors (the channel-vectorised path on the
    ISAs whose vectors are wider than the row), every pixel-tile remainder, 1 to 5 vectors of 8 or 16 channels."""
    for oc in (8, 16, 24, 32, 48, 64, 80):
        x = rng.standard_normal((1, 3, 4, width + 1), dtype=np.float32)
        w = rng.standard_normal((oc, 3, 2, 2), dtype=np.float32)
        b = rng.standard_normal(oc, dtype=np.float32)
        for pad, bias in (((0, 0), b), ((1, 1), None)):
            y = _core.conv2d_forward(_to_lanes(x, 1), w, bias, (1, 1), pad, "direct")
            close(_from_lanes(y, 1), ref.conv2d(x, w, np.zeros(oc, np.float32) if bias is None else b, (1, 1), pad))


def check_conv_pool(rng, x_shape, oc, kernel, settings):
    """The fused one-sample conv -> 2x2 max pool -> ReLU against numpy, for each (padding, with bias, relu)."""
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal((oc, x_shape[1], *kernel), dtype=np.float32)
    b = rng.standard_normal(oc, dtype=np.float32)
    for pad, with_bias, relu in settings:
        y, argmax = _core.conv_pool_forward(_to_lanes(x, 1), w, b if with_bias else None, pad, relu)
        assert argmax is None
        want = ref.pool2d("max", ref.conv2d(x, w, b if with_bias else np.zeros(oc, np.float32), (1, 1), pad),
                          (2, 2), (2, 2))
        close(_from_lanes(y, 1), np.maximum(want, 0) if relu else want)


@pytest.mark.parametrize("width", [2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70])
def test_conv_pool_one_sample_row_tails(isa, rng, width):
    """Vectorised along the row: conv rows of every length around 1-2 vectors of 4, 8 and 16 floats and past one
    chunk, odd and even; channel counts around the register tile (1 to 9); an odd last conv row, which the pooling
    drops; with and without bias, padding and ReLU."""
    for oc, height in ((1, 2), (3, 5), (7, 4), (9, 3)):
        check_conv_pool(rng, (1, 2, height + 2, width + 2), oc, (3, 3),
                        (((0, 0), True, True), ((1, 2), False, False), ((2, 1), True, False)))


@pytest.mark.parametrize("width", [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15])
def test_conv_pool_one_sample_narrow_rows(isa, rng, width):
    """Vectorised along the channels (rows narrower than a vector, channel counts of whole vectors of 8 or 16):
    every pixel-tile remainder, odd widths, 1 to 5 vectors of channels, and a padding that makes some kernel rows
    reach only one of a pooled row's two conv rows."""
    for oc in (8, 16, 24, 32, 48, 64, 80):
        check_conv_pool(rng, (1, 3, 5, width + 1), oc, (2, 2),
                        (((0, 0), True, True), ((1, 1), False, True), ((1, 0), True, False)))


def check_conv_pool_sixteen_lanes(rng, x_shape, oc, kernel):
    """The fused conv -> 2x2 max pool -> ReLU at 16 lanes against numpy, with and without padding, bias and ReLU: the
    pooled output and, for the backward pass, the winning window position of each output (its convolution value is
    the window's maximum)."""
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal((oc, x_shape[1], *kernel), dtype=np.float32)
    b = rng.standard_normal(oc, dtype=np.float32)
    for pad, with_bias, relu in (((0, 0), True, True), ((1, 2), False, False), ((2, 1), True, False)):
        pad = tuple(min(p, k - 1) for p, k in zip(pad, kernel))
        y, argmax = _core.conv_pool_forward(_to_lanes(x, 16), w, b if with_bias else None, pad, relu)
        conv = ref.conv2d(x, w, b if with_bias else np.zeros(oc, np.float32), (1, 1), pad)
        ph, pw = conv.shape[2] // 2, conv.shape[3] // 2
        windows = np.stack([conv[:, :, dy : 2 * ph : 2, dx : 2 * pw : 2] for dy in (0, 1) for dx in (0, 1)])
        want = windows.max(axis=0)
        close(_from_lanes(y, len(x)), np.maximum(want, 0) if relu else want)
        at = _from_lanes(argmax, len(x))
        assert set(np.unique(at)) <= {-1.0, 0.0, 1.0, 2.0, 3.0}
        no_gradient = relu & (want <= 0)  # the ReLU zeroed these outputs: argmax names no position (-1)
        np.testing.assert_array_equal(at == -1, no_gradient)
        picked = np.take_along_axis(windows, np.maximum(at, 0).astype(np.int64)[None], axis=0)[0]
        close(picked[~no_gradient], want[~no_gradient])  # the recorded position holds the maximum


@pytest.mark.parametrize("width", [2, 3, 4, 5, 9, 12, 13])
@pytest.mark.parametrize("oc", [1, 5, 7, 13])
def test_conv_pool_sixteen_lanes(isa, rng, width, oc):
    """At 16 lanes (a training batch): odd widths and heights, channel counts around the register tiles, two blocks
    (one partly padding)."""
    check_conv_pool_sixteen_lanes(rng, (20, 2, 7, width + 2), oc, (3, 3))


@pytest.mark.parametrize("width", [2, 3, 5, 12, 13])
@pytest.mark.parametrize("oc", [1, 2, 3, 32])
def test_conv_pool_sixteen_lanes_one_channel(isa, rng, width, oc):
    """One input channel and a 3x3 kernel (the MNIST-CoreML-Training graph's first layer), which AVX-512 runs unpadded
    with each channel pair's weights held in registers across a pooled row: odd widths and heights, an odd channel
    count's last single channel."""
    check_conv_pool_sixteen_lanes(rng, (20, 1, 7, width + 2), oc, (3, 3))


@pytest.mark.parametrize("shape", [(4, 13, 13), (17, 7, 10), (32, 4, 5), (16, 3, 3)])
@pytest.mark.parametrize("oc", [1, 2, 3, 4, 5, 32])
@pytest.mark.parametrize("k", [2, 5])
def test_conv_pool_winograd(isa, rng, shape, oc, k):
    """2x2 and 5x5 kernels from 4 input channels on, at 16 lanes, take Winograd's F(2x2, 2x2) and F(2x2, 5x5) on the
    ISAs that have them (lenet.kernels() names them): odd sizes (the pooling drops a row and a column), one pooling
    window, channel counts around the register tiles of 2 or 3 output channels, two blocks."""
    if isa in ("reference", "avx512"):
        assert "winograd" in lenet.kernels()["ops"]["conv2d_maxpool2d_fused"]
    check_conv_pool_sixteen_lanes(rng, (20, shape[0], shape[1] + k - 1, shape[2] + k - 1), oc, (k, k))


def routed_conv_backward(rng, x, w, b, pad, relu):
    """The fused layer's forward on x, a random pooled gradient dy, and the direct convolution's backward of dy routed
    to the winning positions by numpy: (argmax, dy, dx, dw, db)."""
    xl = _to_lanes(x, 16)
    y, argmax = _core.conv_pool_forward(xl, w, b, pad, relu)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    oh, ow = ref.conv2d(x[:1], w, None, (1, 1), pad).shape[2:]
    g = np.zeros((y.shape[0], len(w), oh, ow, 16), np.float32)
    for d in range(4):
        g[:, :, d // 2 : 2 * y.shape[2] : 2, d % 2 : 2 * y.shape[3] : 2] = np.where(argmax == d, dy, 0)
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dx = _core.conv2d_backward(xl, w, g, dw, db, (1, 1), pad, True, "direct")
    return argmax, dy, dx, dw, db


def sparse_backward(ic, kh, kw):
    """The fused layer's backward goes through the pooling's sparsity on the current ISA: lenet.kernels() names the
    kernel, and a kernel row of every input channel takes more than one of its vectors and at most two, or it is a
    2x2 kernel over 32 input channels (four)."""
    fused = lenet.kernels()["ops"]["conv2d_maxpool2d_fused"]
    return "conv_pool_sparse_bwd" in fused and ((16 < kw * ic <= 32 and kh <= 5) or (kh, kw, ic) == (2, 2, 32))


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3)])
@pytest.mark.parametrize("oc", [1, 5, 7, 13, 32])
def test_conv_pool_backward_equals_routed_conv_backward(isa, rng, kernel, oc):
    """The fused backward routes dy into the zero-padded full-size gradient that its input gradient reads: dx
    bit-identical to the direct convolution's backward of that gradient routed by numpy; dw too where the direct
    kernel takes it from there, else (through the pooling's sparsity) close; db (summed from the pooled dy) close.
    Odd outputs (the pooling drops a row and a column), channel counts around the register tiles, two blocks, with
    and without padding."""
    x = rng.standard_normal((20, 3, 8, 9), dtype=np.float32)
    w = rng.standard_normal((oc, 3) + kernel, dtype=np.float32)
    b = rng.standard_normal(oc, dtype=np.float32)
    for pad, relu in (((0, 0), True), ((1, 1), False), ((1, 0), True)):
        xl = _to_lanes(x, 16)
        argmax, dy, want_dx, want_dw, want_db = routed_conv_backward(rng, x, w, b, pad, relu)
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx = _core.conv_pool_backward(xl, w, argmax, dy, dw, db, pad)
        np.testing.assert_array_equal(dx, want_dx)
        if sparse_backward(3, *kernel):
            close(dw, want_dw)
        else:
            np.testing.assert_array_equal(dw, want_dw)
        close(db, want_db)
        assert _core.conv_pool_backward(xl, w, argmax, dy, dw, None, pad, need_dx=False) is None


@pytest.mark.parametrize("ic", [4, 6, 7, 13])
@pytest.mark.parametrize("oc", [1, 2, 16])
@pytest.mark.parametrize("size", [(2, 2), (6, 6), (7, 8), (10, 10)])
def test_conv_pool_backward_winograd_5x5(isa, rng, ic, oc, size):
    """5x5 kernels from 4 input channels on, unpadded, take their input gradient through F(2x2, 5x5) backwards on the
    ISAs that have it (lenet.kernels() names it), unless the pooling's sparsity takes the whole backward (4 and 6
    channels: kernel rows of 20 and 30 floats): dx close to the direct convolution's of the routed gradient, dw
    bit-identical where the direct kernel takes it, else close. Input channel counts around its register tile of 6,
    odd outputs (the pooling drops a row and a column, whose inputs then get no gradient through the windows), one
    pooling window, two blocks; padded, the direct convolution."""
    if isa in ("reference", "avx512"):
        assert "conv_pool_dx_winograd" in lenet.kernels()["ops"]["conv2d_maxpool2d_fused"]
    x = rng.standard_normal((20, ic, size[0] + 4, size[1] + 4), dtype=np.float32)
    w = rng.standard_normal((oc, ic, 5, 5), dtype=np.float32)
    b = rng.standard_normal(oc, dtype=np.float32)
    for pad in ((0, 0), (2, 1)):
        argmax, dy, want_dx, want_dw, want_db = routed_conv_backward(rng, x, w, b, pad, True)
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx = _core.conv_pool_backward(_to_lanes(x, 16), w, argmax, dy, dw, db, pad)
        close(dx, want_dx)
        if sparse_backward(ic, 5, 5):
            close(dw, want_dw)
        else:
            np.testing.assert_array_equal(dw, want_dw)
        close(db, want_db)


@pytest.mark.parametrize(
    "ic_kernel", [(17, 1), (9, 2), (8, 3), (5, 4), (6, 5), (4, 5), (16, 2), (1, 5), (3, 5), (7, 5)]
)
@pytest.mark.parametrize("oc", [1, 3, 16])
@pytest.mark.parametrize("size", [(2, 2), (5, 4), (8, 8), (10, 11)])
def test_conv_pool_backward_sparse_rows(isa, rng, ic_kernel, oc, size):
    """The backward through the pooling's sparsity where a kernel row of every input channel takes more than one
    vector and at most two (17 to 32 floats; LeNet-5's second layer: 30): dw, db and dx against float64 numpy sums
    over each window's winning position; dw and db the same without dx, and close to the reference ISA's. 1 to 5
    kernel rows; around the rule's bounds (LeNet-5's first layer, 5 floats; 15; 35: the direct kernels); padded (dx
    then from the routed gradient); outputs the pooling drops a row and a column of; 1 to 30 windows (transposes of
    16 entries, partly padding); ReLU-zeroed windows; two blocks (one partly padding)."""
    ic, k = ic_kernel
    if isa in ("reference", "avx2", "avx512"):
        assert sparse_backward(ic, k, k) == (16 < ic * k <= 32)
    x = rng.standard_normal((20, ic, size[0] + k - 1, size[1] + k - 1), dtype=np.float32)
    x[5] = 0.0  # with a negative bias, every window of this sample ReLU-zeroed
    w = rng.standard_normal((oc, ic, k, k), dtype=np.float32)
    b = -0.1 * np.abs(rng.standard_normal(oc, dtype=np.float32)) - 0.01
    for pad in ((0, 0), (2, 1)):
        if pad[0] >= k:
            continue
        xl = _to_lanes(x, 16)
        y, argmax = _core.conv_pool_forward(xl, w, b, pad, True)
        assert (argmax == -1).any() and (argmax >= 0).any()
        dy = _to_lanes(rng.standard_normal((len(x),) + argmax.shape[1:4], dtype=np.float32), 16)
        a = _from_lanes(argmax, len(x)).astype(np.int64)
        g = _from_lanes(dy, len(x)).astype(np.float64)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
        want_dw, want_dxp, wd = np.zeros(w.shape), np.zeros(xp.shape), w.astype(np.float64)
        for py in range(a.shape[2]):
            for px in range(a.shape[3]):
                for d in range(4):
                    gd = np.where(a[:, :, py, px] == d, g[:, :, py, px], 0.0)  # (n, oc)
                    y0, x0 = 2 * py + d // 2, 2 * px + d % 2
                    want_dw += np.einsum("no,nikl->oikl", gd, xp[:, :, y0 : y0 + k, x0 : x0 + k])
                    want_dxp[:, :, y0 : y0 + k, x0 : x0 + k] += np.einsum("no,oikl->nikl", gd, wd)
        want_dx = want_dxp[:, :, pad[0] : pad[0] + x.shape[2], pad[1] : pad[1] + x.shape[3]]
        want_db = np.where(a >= 0, g, 0.0).sum(axis=(0, 2, 3))
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx = _core.conv_pool_backward(xl, w, argmax, dy, dw, db, pad)
        close(_from_lanes(dx, len(x)), want_dx, 1e-4)
        close(dw, want_dw, 1e-4)
        close(db, want_db, 1e-4)
        dw_only, db_only = np.zeros_like(w), np.zeros_like(b)
        assert _core.conv_pool_backward(xl, w, argmax, dy, dw_only, db_only, pad, need_dx=False) is None
        if sparse_backward(ic, k, k):  # the same sums without dx
            np.testing.assert_array_equal(dw_only, dw)
            np.testing.assert_array_equal(db_only, db)
        else:  # the direct kernel from the stored or the routed gradient
            close(dw_only, dw, 1e-5)
            close(db_only, db, 1e-5)
        with lenet.use_isa("reference"):
            dw_ref = np.zeros_like(w)
            _core.conv_pool_backward(xl, w, argmax, dy, dw_ref, None, pad, need_dx=False)
        close(dw, dw_ref, 1e-5)


@pytest.mark.parametrize("ic", [16, 32])
@pytest.mark.parametrize("oc", [1, 3, 16, 33])
@pytest.mark.parametrize("size", [(2, 2), (3, 5), (12, 13), (13, 13)])
def test_conv_pool_backward_sparse(isa, rng, ic, oc, size):
    """2x2 kernels from 16 or 32 input channels without padding: the backward with dx goes through the pooling's
    sparsity where the ISA has that kernel (lenet.kernels() names it). dx, dw and db against float64 numpy sums over
    each window's winning position: odd conv outputs (the pooling drops a row and a column), a single window, channel
    counts around the vector, two blocks (one partly padding), outputs the ReLU zeroed (argmax -1)."""
    if isa in ("reference", "avx2", "avx512"):
        assert "conv_pool_sparse_bwd" in lenet.kernels()["ops"]["conv2d_maxpool2d_fused"]
    x = rng.standard_normal((20, ic, size[0] + 1, size[1] + 1), dtype=np.float32)
    w = rng.standard_normal((oc, ic, 2, 2), dtype=np.float32)
    b = rng.standard_normal(oc, dtype=np.float32)
    xl = _to_lanes(x, 16)
    y, argmax = _core.conv_pool_forward(xl, w, b, (0, 0), True)
    assert (argmax == -1).any() and (argmax >= 0).any()
    a = _from_lanes(argmax, len(x)).astype(np.int64)
    dy = _to_lanes(rng.standard_normal(a.shape, dtype=np.float32), 16)  # 0 in the padding lanes, as in training
    g = _from_lanes(dy, len(x)).astype(np.float64)
    ph, pw = a.shape[2:]
    want_dx = np.zeros(x.shape)
    want_dw = np.zeros(w.shape)
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    for py in range(ph):
        for px in range(pw):
            for d in range(4):  # the window's position d wins: dy reaches the conv output there
                gd = np.where(a[:, :, py, px] == d, g[:, :, py, px], 0.0)  # (n, oc)
                y0, x0 = 2 * py + d // 2, 2 * px + d % 2
                want_dx[:, :, y0 : y0 + 2, x0 : x0 + 2] += np.einsum("no,oikl->nikl", gd, wd)
                want_dw += np.einsum("no,nikl->oikl", gd, xd[:, :, y0 : y0 + 2, x0 : x0 + 2])
    want_db = np.where(a >= 0, g, 0.0).sum(axis=(0, 2, 3))
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dx = _core.conv_pool_backward(xl, w, argmax, dy, dw, db, (0, 0))
    close(_from_lanes(dx, len(x)), want_dx)
    close(dw, want_dw, 1e-4)
    close(db, want_db, 1e-4)
    dw2 = np.zeros_like(w)
    np.testing.assert_array_equal(_core.conv_pool_backward(xl, w, argmax, dy, dw2, None, (0, 0)), dx)
    np.testing.assert_array_equal(dw2, dw)


def test_conv_pool_backward_rejects_what_it_cannot_run(rng):
    w = np.ones((2, 1, 3, 3), np.float32)
    a = np.zeros((1, 2, 2, 2, 16), np.float32)
    with pytest.raises(ValueError, match="runs on 16 lanes, got 8"):
        _core.conv_pool_backward(np.zeros((1, 1, 6, 6, 8), np.float32), w, a[..., :8], a[..., :8], np.zeros_like(w),
                                 None)
    with pytest.raises(ValueError, match="argmax"):
        _core.conv_pool_backward(np.zeros((1, 1, 6, 6, 16), np.float32), w, a[:, :1], a, np.zeros_like(w), None)
    with pytest.raises(ValueError, match="padding must be smaller than the kernel"):
        _core.conv_pool_backward(np.zeros((1, 1, 2, 2, 16), np.float32), w, a, a, np.zeros_like(w), None, (3, 3))


def test_conv_pool_rejects_what_it_cannot_run(rng):
    w = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="1 lane"):
        _core.conv_pool_forward(np.zeros((1, 1, 6, 6, 8), np.float32), w, None)
    with pytest.raises(ValueError, match="smaller than the 2x2 pooling window"):
        _core.conv_pool_forward(np.zeros((1, 1, 3, 6, 1), np.float32), w, None)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("lanes", [1, 16, 17])
def test_conv2d_backward(isa, rng, case, lanes):
    x, xl, w, b, stride, pad = conv_case(rng, case, lanes)
    for algo in ("auto", "im2col"):
        check_conv_backward(rng, x, xl, w, b, stride, pad, lanes, algo)


def check_conv_backward(rng, x, xl, w, b, stride, pad, lanes, algo):
    y = ref.conv2d(x, w, b, stride, pad)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dxl = _core.conv2d_backward(xl, w, _to_lanes(dy, lanes), dw, db, stride, pad, True, algo)
    dx = _from_lanes(dxl, len(x))
    # conv is bilinear: <dy, conv(x, w)> = <dx, x> = <dw, w>; and one-hot probes pin single entries exactly.
    inner = float((dy.astype(np.float64) * (y - b[None, :, None, None])).sum())
    close(float((dx.astype(np.float64) * x).sum()), inner, 1e-4)
    close(float((dw.astype(np.float64) * w).sum()), inner, 1e-4)
    close(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), 1e-4)
    for _ in range(3):
        probe_w = np.zeros_like(w)
        probe_w[tuple(rng.integers(0, s) for s in w.shape)] = 1.0
        close(float((dw.astype(np.float64) * probe_w).sum()),
              float((dy * ref.conv2d(x, probe_w, None, stride, pad)).sum()), 1e-4)
        probe_x = np.zeros_like(x)
        probe_x[tuple(rng.integers(0, s) for s in x.shape)] = 1.0
        close(float((dx.astype(np.float64) * probe_x).sum()),
              float((dy * ref.conv2d(probe_x, w, None, stride, pad)).sum()), 1e-4)


def test_conv2d_backward_accumulates_into_grad_buffers(rng):
    x, xl, w, b, stride, pad = conv_case(rng, CONV_CASES[1], 16)
    dy = _to_lanes(rng.standard_normal((4, 16, 10, 10)).astype(np.float32), 16)
    dw1, db1 = np.zeros_like(w), np.zeros_like(b)
    _core.conv2d_backward(xl, w, dy, dw1, db1, stride, pad, False)
    dw2, db2 = dw1.copy(), db1.copy()
    _core.conv2d_backward(xl, w, dy, dw2, db2, stride, pad, False)  # += onto the first result
    close(dw2, 2 * dw1.astype(np.float64))
    close(db2, 2 * db1.astype(np.float64))


# ---- pooling -------------------------------------------------------------------------------------------------
POOL_CASES = [((2, 6, 28, 28), (2, 2), (2, 2)), ((3, 4, 9, 7), (3, 3), (2, 2)), ((1, 3, 5, 6), (2, 3), (1, 1)),
              ((2, 32, 13, 13), (2, 2), (2, 2))]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("lanes", LANES)
def test_pool2d(isa, rng, kind, case, lanes):
    shape, kernel, stride = case
    x = rng.standard_normal(shape, dtype=np.float32)
    xl = _to_lanes(x, lanes)
    y = _core.pool2d_forward(kind, xl, kernel, stride)
    expected = ref.pool2d(kind, x, kernel, stride)
    close(_from_lanes(y, shape[0]), expected)
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    dx = _from_lanes(_core.pool2d_backward(kind, xl, y, _to_lanes(dy, lanes), kernel, stride), shape[0])
    close(dx, ref.pool2d_backward(kind, x, dy, kernel, stride))


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("lanes", [1, 16, 17])
def test_maxpool_fused_relu(isa, rng, case, lanes):
    shape, kernel, stride = case
    x = rng.standard_normal(shape, dtype=np.float32)
    xl = _to_lanes(x, lanes)
    y = _core.pool2d_forward("max", xl, kernel, stride, True)
    expected = np.maximum(ref.pool2d("max", x, kernel, stride), 0)
    close(_from_lanes(y, shape[0]), expected)
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    dx = _from_lanes(_core.pool2d_backward("max", xl, y, _to_lanes(dy, lanes), kernel, stride, True), shape[0])
    close(dx, ref.pool2d_backward("max", x, np.where(expected > 0, dy, 0), kernel, stride))


def test_maxpool_ties_go_to_the_first_maximum(isa):
    x = np.ones((1, 1, 2, 2), np.float32)
    xl = _to_lanes(x, 16)
    y = _core.pool2d_forward("max", xl, (2, 2), (2, 2))
    dx = _from_lanes(_core.pool2d_backward("max", xl, y, np.ones_like(y), (2, 2), (2, 2)), 1)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


# ---- dense, activations, loss ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 400, 120), (17, 84, 10), (20, 1152, 500), (1, 7, 13)])
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("dead", [False, True])
def test_linear(isa, rng, shape, lanes, dead):
    B, I, O = shape
    x = rng.standard_normal((B, I), dtype=np.float32)
    dy = rng.standard_normal((B, O)).astype(np.float32)
    if dead:  # features no sample has (behind a ReLU: +0, or -0) and units that pass no gradient: skipped rows
        x[:, ::3], x[:, 1::9] = 0.0, -0.0
        dy[:, ::4] = 0.0
    w = rng.standard_normal((O, I), dtype=np.float32) * 0.1
    b = rng.standard_normal(O, dtype=np.float32)
    xl = _to_lanes(x, lanes)
    y = _core.linear_forward(xl, w, b)
    close(_from_lanes(y, B), ref.linear(x, w, b))
    dw0, db0 = rng.standard_normal(w.shape).astype(np.float32), rng.standard_normal(O).astype(np.float32)
    dw, db = dw0.copy(), db0.copy()  # linear_backward adds to them
    dx = _from_lanes(_core.linear_backward(xl, w, _to_lanes(dy, lanes), dw, db, True), B)
    close(dx, dy.astype(np.float64) @ w, 1e-4)
    close(dw - dw0, dy.T.astype(np.float64) @ x, 1e-4)
    close(db - db0, dy.astype(np.float64).sum(0), 1e-4)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 33, 100003])
def test_activations(isa, rng, n):
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    y = _core.activation_forward("relu", x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(_core.activation_backward("relu", y, dy), np.where(x > 0, dy, 0))
    t = _core.activation_forward("tanh", x)
    np.testing.assert_allclose(t, np.tanh(x.astype(np.float64)), atol=2e-6)
    close(_core.activation_backward("tanh", t, dy), dy * (1 - t.astype(np.float64) ** 2))


def test_tanh_extremes(isa):
    x = np.array([-1e4, -100, -9, -1e-6, 0, 1e-6, 9, 100, 1e4], np.float32)
    np.testing.assert_allclose(_core.activation_forward("tanh", x), np.tanh(x), atol=2e-6)


@pytest.mark.parametrize("batch,classes", [(1, 10), (16, 10), (37, 10), (5, 3), (64, 17)])
@pytest.mark.parametrize("lanes", LANES)
def test_softmax_cross_entropy(isa, rng, batch, classes, lanes):
    logits = (rng.standard_normal((batch, classes)) * 5).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    nblk = -(-batch // lanes)
    lab = lenet.functional.lane_labels(labels, batch, nblk, lanes, classes)
    loss, dl = _core.softmax_xent(_to_lanes(logits, lanes), lab, 1.0 / batch)
    exp_loss, exp_grad = ref.softmax_xent(logits, labels)
    close(loss[:batch], exp_loss, 1e-5)
    assert np.all(loss[batch:] == 0)
    close(_from_lanes(dl, batch), exp_grad, 1e-5)
    assert np.all(np.moveaxis(dl, -1, 1).reshape(nblk * lanes, classes)[batch:] == 0)  # padding lanes: no gradient


# ---- optimisers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 70001])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update(isa, rng, n, nesterov):
    w = rng.standard_normal(n).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    w64, v64 = w.astype(np.float64), v.astype(np.float64)
    lr, mom, wd = 0.1, 0.9, 1e-3
    _core.sgd_update(w, g, v, lr, mom, wd, nesterov)
    g64 = g + wd * w64
    v64 = mom * v64 + g64
    w64 -= lr * (g64 + mom * v64 if nesterov else v64)
    close(v, v64)
    close(w, w64)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 70001])
def test_adam_update(isa, rng, n):
    w = rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    w64, m64, v64 = w.astype(np.float64), np.zeros(n), np.zeros(n)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 1e-4
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        _core.adam_update(w, g, m, v, lr, b1, b2, eps, wd, step)
        g64 = g + wd * w64
        m64 = b1 * m64 + (1 - b1) * g64
        v64 = b2 * v64 + (1 - b2) * g64 ** 2
        w64 -= lr * (m64 / (1 - b1 ** step)) / (np.sqrt(v64 / (1 - b2 ** step)) + eps)
    close(w, w64, 1e-5)


@pytest.mark.parametrize("in_, L", [(1, 16), (15, 16), (16, 32), (17, 3), (47, 48), (49, 64), (100, 17)])
@pytest.mark.parametrize("col0", [0, 16, 5])
@pytest.mark.parametrize("stream", [False, True])
def test_dense_gather_transposes_into_panels(isa, rng, in_, L, col0, stream):
    """x [in][L] into x^T panels and dy [out][L] into dyT's columns at samples [col0, col0 + L) of the batch, nothing
    else written; streamed stores (on more than one thread) write the same."""
    out, B, P = 21, col0 + L + 16, 48
    x = rng.standard_normal((in_, L)).astype(np.float32)
    dy = rng.standard_normal((out, L)).astype(np.float32)
    xP, dyT = _core.dense_gather(x, dy, col0, B, stream)
    want_xT = np.full((B, xP.shape[0] * P), -1.0, np.float32)
    want_xT[col0:col0 + L, :in_] = x.T
    assert np.array_equal(xP, want_xT.reshape(B, -1, P).transpose(1, 0, 2))
    want_dyT = np.full((out, B), -1.0, np.float32)
    want_dyT[:, col0:col0 + L] = dy
    assert np.array_equal(dyT, want_dyT)


@pytest.mark.parametrize("offset", [0, 1, 5, 15])
@pytest.mark.parametrize("n", [1, 17, 40, 70001])
def test_updates_write_the_same_weights_streamed_or_stored(isa, rng, offset, n):
    """On more than one thread the updates write the weights with cache-bypassing stores from the first aligned
    vector on (kernels.h: stream), on one thread with plain stores: the same values, at every alignment."""
    w0, g, s0 = (rng.standard_normal(n + offset).astype(np.float32) for _ in range(3))
    got = []
    old = lenet.get_num_threads()
    try:
        for threads in (1, 2):
            lenet.set_num_threads(threads)
            w, v, m, a = w0.copy(), s0.copy(), np.abs(s0), np.abs(s0)
            _core.sgd_update(w[offset:], g[offset:], v[offset:], 0.1, 0.9, 1e-3, False)
            _core.adam_update(w[offset:], g[offset:], m[offset:], a[offset:], 1e-2, 0.9, 0.999, 1e-8, 1e-4, 3)
            got.append((w, v, m, a))
    finally:
        lenet.set_num_threads(old)
    for x, y in zip(*got):
        assert np.array_equal(x, y)
    assert np.array_equal(got[0][0][:offset], w0[:offset]) and not np.array_equal(got[0][0][offset:], w0[offset:])


# ---- SIMD against the reference table, bit-for-bit where the order of operations is the same ------------------
def test_simd_maxpool_and_relu_bitwise_equal_to_reference(rng):
    x = _to_lanes(rng.standard_normal((37, 6, 28, 28), dtype=np.float32), 16)
    with lenet.use_isa("reference"):
        want = _core.pool2d_forward("max", x, (2, 2), (2, 2)), _core.activation_forward("relu", x)
    for isa in lenet.available_isas():
        with lenet.use_isa(isa):
            got = _core.pool2d_forward("max", x, (2, 2), (2, 2)), _core.activation_forward("relu", x)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("lanes", [1, 5, 16])
def test_pack_images_gathers_scales_and_pads(rng, lanes):
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    idx = rng.permutation(50)[:19].astype(np.int64)  # the int64 _core takes (intp is 32-bit on armv7)
    packed = _core.pack_images(images, idx, lanes)
    assert packed.shape == (-(-19 // lanes), 1, 28, 28, lanes)
    np.testing.assert_array_equal(_from_lanes(packed, 19), lenet.data.to_float(images[idx]))
    assert not np.moveaxis(packed, -1, 1).reshape(-1, 1, 28, 28)[19:].any()
    t = lenet.functional.image_batch(images, idx)
    assert t.shape == (19, 1, 28, 28) and t.lanes == 16 and not t.requires_grad


@pytest.mark.parametrize("shape", [(28, 28), (5, 7), (4, 4), (1, 3)])
def test_pack_images_whole_blocks_every_isa(isa, rng, shape):
    """Whole blocks of 16 go through the kernels' pack (AVX-512: 16 pixels at a time, transposed): bit-identical to
    numpy's astype(float32) / 255 on every ISA, with pixel counts that are a multiple of 16 (28 x 28, 4 x 4) and
    leave a tail (35, 3), every byte value, two blocks and a partial third."""
    images = rng.integers(0, 256, (300,) + shape, dtype=np.uint8)
    images[0].flat[: min(256, images[0].size)] = np.arange(256, dtype=np.uint8)[: images[0].size]
    idx = np.concatenate([[0], rng.permutation(300)[:36]]).astype(np.int64)
    # two packs of complementary pixels: an element left unwritten shows in one of them, whatever the memory held
    for pixels in (images, 255 - images):
        packed = _core.pack_images(pixels, idx, 16)
        np.testing.assert_array_equal(_from_lanes(packed, 37)[:, 0], pixels[idx].astype(np.float32) / 255)


@pytest.mark.parametrize("lanes", [1, 5, 16, 17, 70])
@pytest.mark.parametrize("batch", [1, 15, 16, 69, 150])
def test_image_batch_gathers_and_scales_like_numpy(rng, lanes, batch):
    """The C++ gather (lanes side by side, 64 at a time, padding lanes zero) against numpy's gather, scaling and
    layout, on batches that leave every kind of partial block."""
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    idx = rng.integers(0, 300, batch)
    got = lenet.functional.image_batch(images, idx, lanes)
    want = lenet.functional.to_lanes(images[idx][:, None].astype(np.float32) / 255, lanes)
    assert got.data.shape == want.data.shape
    assert np.array_equal(got.data, want.data)
