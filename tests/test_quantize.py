"""Post-training int8 quantisation (lenet.quantize): the int8 kernels of every instruction set against the
reference and against numpy (exact integers), the whole int8 network against a numpy re-implementation of the
scheme, accuracy / file size / round trip after a short real training on MNIST, and the errors."""
import os

import numpy as np
import pytest

import lenet
from lenet import _core

INT8_ISAS = _core.int8_isas()
SIMD_ISAS = [i for i in INT8_ISAS if i != "reference"]


def _rq(rng, acc):
    """Bias and multipliers that spread the requantised outputs of these sums over the codes."""
    m = acc.shape[0]
    bias = (rng.standard_normal(m) * 0.3 * (acc.std() + 1.0)).astype(np.int32)
    mult = ((rng.random(m) + 0.5) * 60.0 / (acc.std() + 1.0)).astype(np.float32)
    return bias, mult


def _requant(acc, bias, mult, zero, lo):
    f = (acc + bias).astype(np.float32) * mult
    f = np.clip(f, np.float32(lo - zero), np.float32(255 - zero))
    return (np.rint(f).astype(np.int64) + zero).astype(np.uint8)


def _conv_numpy(xq, w, hp, ld, oh, ow, sh):
    """The definition of QConvArgs in numpy: y[m][oy][ox] = sum dot4(xq[c][g][oy*sh + ky][ox], w[m][c][ky][g])."""
    oc, ic, kh, G, _ = w.shape
    groups = xq.view(np.uint8).astype(np.int64)
    acc = np.zeros((oc, oh, ow), np.int64)
    for c in range(ic):
        for g in range(G):
            for ky in range(kh):
                for oy in range(oh):
                    start = ((c * G + g) * hp + oy * sh + ky) * ld
                    d = groups[4 * start: 4 * (start + ow)].reshape(ow, 4)
                    acc[:, oy, :] += (w[:, c, ky, g, :].astype(np.int64) @ d.T)
    return acc


CONV_CASES = [  # ic, kh, G, oc, oh, ow, sh, ld (ld < ow: one flat row running across output rows)
    (1, 5, 2, 6, 1, 784, 1, 28), (6, 5, 2, 16, 1, 100, 1, 10), (1, 3, 1, 1, 3, 1, 1, 1), (2, 2, 1, 3, 2, 7, 2, 7),
    (3, 3, 1, 5, 4, 8, 1, 8), (1, 1, 1, 7, 1, 9, 1, 9), (2, 3, 2, 17, 2, 15, 3, 15), (1, 2, 3, 4, 2, 16, 1, 16),
    (2, 4, 1, 2, 3, 17, 2, 17), (1, 3, 1, 9, 2, 31, 1, 33), (1, 3, 1, 8, 1, 33, 1, 40), (3, 2, 1, 6, 1, 65, 1, 13),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_kernels_match_numpy_and_reference(case, rng):
    ic, kh, G, oc, oh, ow, sh, ld = case
    hp = (oh - 1) * sh + kh if ow <= ld else kh + (ow - 1) // ld + 1
    nbytes = 4 * ((ic * G - 1) * hp + (oh - 1) * sh + kh - 1) * ld + 4 * (ow + 32)
    nbytes = max(nbytes, 4 * ic * G * hp * ld + 4 * 64)
    xq = rng.integers(0, 256, nbytes, dtype=np.uint8)
    w = rng.integers(-127, 128, (oc, ic, kh, G, 4), dtype=np.int8)
    wsum = w.reshape(oc, -1).astype(np.int64).sum(axis=1).astype(np.int32)  # the kernels' contract
    acc = _conv_numpy(xq, w, hp, ld, oh, ow, sh)
    bias, mult = _rq(rng, acc)
    for zero, lo in ((0, 0), (37, 37), (120, 0)):
        expect = _requant(acc, bias[:, None, None], mult[:, None, None], zero, lo)
        if expect.size >= 40:  # the test sees real values, not a clamped constant
            assert len(np.unique(expect)) > 10
        for isa in INT8_ISAS:
            y = _core.int8_conv(isa, xq, w, bias, wsum, mult, zero, lo, hp, ld, oh, ow, sh)
            np.testing.assert_array_equal(y, expect, err_msg=f"{isa} {case} zero {zero} lo {lo}")


@pytest.mark.parametrize("m", [1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 84, 120, 129])
@pytest.mark.parametrize("k4", [1, 3, 21, 100])
def test_dense_kernels_match_numpy_and_reference(m, k4, rng):
    mpad = (m + 15) // 16 * 16
    x = rng.integers(0, 256, 4 * k4, dtype=np.uint8)
    w = rng.integers(-127, 128, (k4, mpad, 4), dtype=np.int8)
    wsum = w[:, :m, :].astype(np.int64).sum(axis=(0, 2)).astype(np.int32)
    acc = (w[:, :m, :].astype(np.int64) * x.reshape(k4, 1, 4).astype(np.int64)).sum(axis=(0, 2))
    bias, mult = _rq(rng, acc)
    expect_f = (acc + bias).astype(np.float32) * mult
    for zero, lo in ((0, 0), (5, 5), (200, 0)):
        expect = _requant(acc, bias, mult, zero, lo)
        for isa in INT8_ISAS:
            np.testing.assert_array_equal(_core.int8_dense(isa, x, w, bias, wsum, mult, zero, lo, m, False), expect,
                                          err_msg=f"{isa} m {m} k4 {k4}")
    for isa in INT8_ISAS:
        np.testing.assert_array_equal(_core.int8_dense(isa, x, w, bias, wsum, mult, 0, 0, m, True), expect_f)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 28, 31, 32, 33, 100])
def test_regroup_kernels(n, rng):
    src = rng.integers(0, 256, n + 67, dtype=np.uint8)
    expect = np.stack([src[i:i + 4] for i in range(n)])
    for isa in INT8_ISAS:
        np.testing.assert_array_equal(_core.int8_regroup(isa, src, n), expect, err_msg=isa)


def test_kernel_report():
    info = lenet.kernels()["int8"]
    assert info["available"] == INT8_ISAS and info["isa"] in INT8_ISAS
    assert info["conv"].endswith("__" + info["isa"]) and info["dense"].endswith("__" + info["isa"])
    features = lenet.kernels()["cpu_features"]
    if "avx512_vnni" in features and "avx512" in lenet.available_isas():
        assert "avx512_vnni" in INT8_ISAS
    with lenet.use_isa("reference"):
        assert lenet.kernels()["int8"]["isa"] == "reference"


# ---- the whole network against numpy -------------------------------------------------------------------------------
def _simulate(q, images):
    """The int8 scheme of lenet/quantize.py, in numpy (int64 sums, float32 requantisation, round half to even)."""
    meta, t = q.metadata["quantization"], q.tensors
    x = images.reshape((len(images),) + q.input_shape).astype(np.int64)
    s_in, z_in = np.float32(meta["input"]["scale"]), meta["input"]["zero_point"]
    outputs = iter(meta["outputs"])
    layers, p, i = q.graph["layers"], 0, 0
    while i < len(layers):
        d = layers[i]
        relu_next = i + 1 < len(layers) and layers[i + 1]["kind"] == "relu"
        if d["kind"] in ("conv2d", "linear"):
            w, sw = t[f"param.{p}"].astype(np.int64), t[f"param.{p}.scale"]
            p += 1
            b = t[f"param.{p}"].astype(np.int64) if d["bias"] else np.zeros(len(sw), np.int64)
            p += d["bias"]
            if d["kind"] == "conv2d":
                (ph, pw), (sh, sv) = d["padding"], d["stride"]
                xp = np.pad(x - z_in, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
                win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sv]
                acc = np.einsum("nchwij,ocij->nohw", win, w) + b[:, None, None]
                shape = (1, -1, 1, 1)
            else:
                acc = (x - z_in).reshape(len(x), -1) @ w.T + b
                shape = (1, -1)
            out = next(outputs, None)
            if out is None:  # the last layer: float logits
                return acc.astype(np.float32) * (np.float64(s_in) * sw.astype(np.float64)).astype(np.float32)
            s_out, z_out = np.float32(out["scale"]), out["zero_point"]
            mult = (np.float64(s_in) * sw.astype(np.float64) / np.float64(s_out)).astype(np.float32).reshape(shape)
            x = _requant(acc, 0, mult, z_out, z_out if relu_next else 0).astype(np.int64)
            s_in, z_in = s_out, z_out
            i += 1 + relu_next
            continue
        if d["kind"] in ("maxpool", "avgpool"):
            win = np.lib.stride_tricks.sliding_window_view(x, d["kernel"], axis=(2, 3))
            win = win[:, :, ::d["stride"][0], ::d["stride"][1]]
            if d["kind"] == "maxpool":
                x = win.max(axis=(4, 5))
            else:  # the mean of the codes, rounded half up
                n = win.shape[4] * win.shape[5]
                x = (win.sum(axis=(4, 5)) + n // 2) // n
            x = np.maximum(x, z_in) if relu_next else x
            i += 1 + relu_next
            continue
        if d["kind"] == "relu":
            x = np.maximum(x, z_in)
        if d["kind"] == "tanh":  # to the fixed output quantisation, scale 1/128 and zero point 128
            x = np.clip(np.rint(np.tanh(np.float64(s_in) * (x - z_in)) * 128) + 128, 0, 255).astype(np.int64)
            s_in, z_in = np.float32(1 / 128), 128
        i += 1
    raise AssertionError("no final layer")


def _small_model(rng):
    lenet.seed(3)
    return lenet.nn.Sequential(  # odd sizes, a stride, a ReLU after pooling, a linear layer without ReLU
        lenet.nn.Conv2d(1, 5, 3, stride=1, padding=1), lenet.nn.MaxPool2d(2), lenet.nn.ReLU(),
        lenet.nn.Conv2d(5, 7, (3, 6), stride=(2, 1), padding=(0, 2)), lenet.nn.ReLU(),
        lenet.nn.Flatten(), lenet.nn.Linear(7 * 6 * 13, 19), lenet.nn.Linear(19, 10))


def _tanh_model():
    lenet.seed(4)
    return lenet.nn.Sequential(  # tanh after a conv, a pooling and a linear layer; average pooling of 2x2 and 3x3/2
        lenet.nn.Conv2d(1, 6, 5, padding=2), lenet.nn.Tanh(), lenet.nn.AvgPool2d(2),
        lenet.nn.Conv2d(6, 5, 3), lenet.nn.AvgPool2d(3, stride=2), lenet.nn.Tanh(), lenet.nn.MaxPool2d(2),
        lenet.nn.Flatten(), lenet.nn.Linear(5 * 2 * 2, 17), lenet.nn.Tanh(), lenet.nn.Linear(17, 10))


@pytest.mark.parametrize("make", [_small_model, _tanh_model], ids=["relu-maxpool", "tanh-avgpool"])
def test_network_matches_numpy_simulation(make, rng):
    model = make(rng) if make is _small_model else make()
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    q = lenet.quantize(model, rng.integers(0, 256, (300, 28, 28), dtype=np.uint8), samples=200)
    expect = _simulate(q, images)
    for isa in lenet.available_isas():
        with lenet.use_isa(isa):
            np.testing.assert_array_equal(q.logits(images), expect, err_msg=isa)
            np.testing.assert_array_equal(q.logits(images[0]), expect[0])
    # a zero point above 0: the last layer's input (no ReLU before it) is signed
    assert q.metadata["quantization"]["outputs"][-1]["zero_point"] > 0
    # and it approximates the fp32 model
    fp = lenet.Model(model).logits(images)
    assert np.abs(expect - fp).max() < 0.1 * np.abs(fp).max()


def test_tanh_table_spans_its_codes(rng):
    """A tanh after a wide-ranged layer reaches both ends of its fixed output codes: -1 -> 0, near 1 -> 255; its
    input 0 (the layer's zero point) -> 128."""
    lenet.seed(5)
    model = lenet.nn.Sequential(lenet.nn.Flatten(), lenet.nn.Linear(784, 8), lenet.nn.Tanh(), lenet.nn.Linear(8, 10))
    model[1].weight.data[:] *= 40  # pre-activations far beyond +-3 on these images
    images = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    q = lenet.quantize(model, images)
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    pre = x @ model[1].weight.data.T + model[1].bias.data
    assert pre.min() < -3 and pre.max() > 3
    np.testing.assert_array_equal(q.logits(images), _simulate(q, images))
    # tanh's codes there: the simulation's intermediate (one step of it by hand, as in _simulate)
    out = q.metadata["quantization"]["outputs"][0]
    s, z = np.float32(out["scale"]), out["zero_point"]
    codes = np.clip(np.rint(pre / s) + z, 0, 255)
    t = np.clip(np.rint(np.tanh(np.float64(s) * (codes - z)) * 128) + 128, 0, 255)
    assert t.min() == 0 and t.max() == 255


# ---- MNIST ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(mnist):
    lenet.seed(0)
    model = lenet.LeNet5()
    opt = lenet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = lenet.Trainer(model, opt, batch_size=64, seed=0, lr_schedule="cosine", captured=True, log=None)
    trainer.fit(mnist.train_images, mnist.train_labels, 2)
    return lenet.Model(model), lenet.quantize(model, mnist.train_images, samples=1000)


def test_quantized_accuracy_and_file(trained, mnist, tmp_path):
    fp, q = trained
    acc32 = (fp.predict(mnist.test_images) == mnist.test_labels).mean()
    acc8 = (q.predict(mnist.test_images) == mnist.test_labels).mean()
    print(f"MNIST test accuracy: fp32 {acc32:.4f}, int8 {acc8:.4f}")
    assert acc32 > 0.97
    assert acc8 >= acc32 - 0.003
    fp.save(tmp_path / "fp32.lenet")
    q.save(tmp_path / "int8.lenet", accuracy=acc8)
    size32, size8 = os.path.getsize(tmp_path / "fp32.lenet"), os.path.getsize(tmp_path / "int8.lenet")
    print(f"file sizes: fp32 {size32} bytes, int8 {size8} bytes ({size8 / size32:.1%})")
    assert size8 <= 0.30 * size32
    loaded = lenet.load(tmp_path / "int8.lenet")
    assert isinstance(loaded, lenet.QuantizedModel)
    assert loaded.metadata["accuracy"] == pytest.approx(acc8)
    assert loaded.classes == q.classes and loaded.input_shape == q.input_shape
    np.testing.assert_array_equal(loaded.logits(mnist.test_images), q.logits(mnist.test_images))
    # float input in [0, 1] is the same pixels
    some = mnist.test_images[:500]
    np.testing.assert_array_equal(q.logits(some.astype(np.float32) / 255), q.logits(some))
    assert q.predict(some[0]) == int(q.predict(some[:1])[0])
    proba = q.predict_proba(some)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # an fp32 file still loads as a Model
    assert type(lenet.load(tmp_path / "fp32.lenet")) is lenet.Model


def test_tanh_avgpool_lenet_on_mnist(mnist):
    """LeNet-5 as LeCun et al. built it (tanh, average pooling), one epoch on MNIST, then quantized: the int8 model
    keeps its accuracy."""
    nn = lenet.nn
    lenet.seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
    opt = lenet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lenet.Trainer(model, opt, batch_size=64, seed=0, lr_schedule="cosine", captured=True, log=None).fit(
        mnist.train_images, mnist.train_labels, 1)
    q = lenet.quantize(model, mnist.train_images)
    acc32 = (lenet.Model(model).predict(mnist.test_images) == mnist.test_labels).mean()
    acc8 = (q.predict(mnist.test_images) == mnist.test_labels).mean()
    print(f"tanh / avgpool LeNet-5, MNIST test accuracy: fp32 {acc32:.4f}, int8 {acc8:.4f}")
    assert acc32 > 0.97
    assert acc8 >= acc32 - 0.003
    np.testing.assert_array_equal(q.logits(mnist.test_images[:50]), _simulate(q, mnist.test_images[:50]))


def test_float_input_rounds_to_the_nearest_pixel_value(trained, rng):
    """Float images in [0, 1] become pixel values as numpy.rint(clip(x * 255)) does: ties to even, out-of-range
    values clamped, NaN as 0 (the model's input check refuses NaN before that, so it is left out here)."""
    _, q = trained
    halves = (np.arange(0, 255, dtype=np.float32) + np.float32(0.5)) / np.float32(255)
    ties = halves[(halves * np.float32(255)) % 1 == 0.5]  # those whose product is an exact tie
    assert len(ties) > 50
    values = np.concatenate([ties, rng.random(4000, dtype=np.float32), [-0.3, 0.0, 1.0, 1.7]]).astype(np.float32)
    x = np.resize(values, (len(values) // 784 + 1) * 784).reshape(-1, 28, 28)
    codes = np.rint(np.clip(x * np.float32(255), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(q.logits(x), q.logits(codes))


def test_quantized_batch_and_threads_agree(trained, mnist):
    _, q = trained
    x = mnist.test_images[:333]
    one = np.stack([q.logits(img) for img in x[:20]])
    np.testing.assert_array_equal(one, q.logits(x[:20]))
    threads = lenet.get_num_threads()
    try:
        lenet.set_num_threads(1)
        single = q.logits(x)
    finally:
        lenet.set_num_threads(threads)
    np.testing.assert_array_equal(single, q.logits(x))


# ---- errors --------------------------------------------------------------------------------------------------------
def test_quantize_errors(rng):
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    model = lenet.LeNet5()
    with pytest.raises(ValueError, match="shape"):
        lenet.quantize(model, images[:, :20])
    with pytest.raises(ValueError, match="NaN"):
        lenet.quantize(model, np.full((2, 28, 28), np.nan, np.float32))
    with pytest.raises(ValueError, match="samples"):
        lenet.quantize(model, images, samples=0)
    with pytest.raises(ValueError, match="percentile"):
        lenet.quantize(model, images, percentile=20)
    q = lenet.quantize(model, images)
    with pytest.raises(TypeError):
        lenet.quantize(q, images)
    with pytest.raises(ValueError, match="shape"):
        q.predict(images[:, :, :27])
    with pytest.raises(TypeError):
        q.predict(np.zeros((1, 28, 28), np.complex64))


def test_bad_quantized_files(tmp_path, rng):
    q = lenet.quantize(lenet.LeNet5(), rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    path = tmp_path / "q.lenet"

    def broken(tensors=None, quant=None):
        meta = dict(q.metadata)
        meta["quantization"] = {**meta["quantization"], **(quant or {})}
        header = {"graph": q.graph, "metadata": meta}
        import json
        _core.write_model_file(str(path), json.dumps(header), list({**q.tensors, **(tensors or {})}.items()))
        with pytest.raises(lenet.ModelFileError) as e:
            lenet.load(path)
        return str(e.value)

    assert "param.0" in broken({"param.0": q.tensors["param.0"].astype(np.float32)})
    assert "param.0.scale" in broken({"param.0.scale": -q.tensors["param.0.scale"]})
    assert "outputs" in broken(quant={"outputs": q.metadata["quantization"]["outputs"][:-1]})
    assert "input" in broken(quant={"input": {"scale": 0.5, "zero_point": 0}})
    assert "zero point" in broken(quant={"outputs": [{"scale": 1.0, "zero_point": 300}] * 4})
    tensors = dict(q.tensors)
    del tensors["param.3"]
    import json
    _core.write_model_file(str(path), json.dumps({"graph": q.graph, "metadata": q.metadata}), list(tensors.items()))
    with pytest.raises(lenet.ModelFileError, match="param.3"):
        lenet.load(path)
