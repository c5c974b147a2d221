"""The autograd graph and the Python layer: accumulation, no_grad, layouts, modules, optimisers."""
import numpy as np
import pytest

import lenet
import lenet.functional as F
from lenet import Tensor, nn, optim


def test_gradient_accumulates_over_two_uses(rng):
    x = Tensor(rng.standard_normal((16, 5)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    labels = rng.integers(0, 3, 16)
    F.cross_entropy(F.linear(x, w), labels).backward()
    once = w.grad.copy()
    w.grad = None
    x.grad = None
    h = F.to_lanes(x)
    a, b = F.linear(h, w), F.linear(h, w)  # the same subgraph used twice: gradients add
    F.cross_entropy(a, labels).backward()
    F.cross_entropy(b, labels).backward()
    np.testing.assert_allclose(w.grad, 2 * once, rtol=1e-5, atol=1e-7)


def test_no_grad_records_nothing(rng):
    w = Tensor(rng.standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    with lenet.no_grad():
        y = F.linear(rng.standard_normal((4, 5)).astype(np.float32), w)
    assert not y.requires_grad and y._parents == ()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_backward_needs_scalar_or_gradient(rng):
    w = Tensor(rng.standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    y = F.linear(rng.standard_normal((4, 5)).astype(np.float32), w)
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    with pytest.raises(ValueError, match="does not match"):
        y.backward(np.ones((4, 3), np.float32))


def test_lanes_layout_round_trip(rng):
    for batch in (1, 7, 16, 33):
        x = rng.standard_normal((batch, 2, 3, 4)).astype(np.float32)
        t = F.to_lanes(x)
        assert t.shape == x.shape and t.data.shape[-1] == F.default_lanes(batch)
        np.testing.assert_array_equal(t.numpy(), x)
        np.testing.assert_array_equal(F.from_lanes(t).numpy(), x)
        padded = np.moveaxis(t.data, -1, 1).reshape((-1,) + x.shape[1:])
        assert padded.shape[0] % t.lanes == 0 and not padded[batch:].any()  # padding lanes hold zeros


def test_padding_lanes_do_not_change_gradients(rng):
    """A batch of 17 (one full block plus one sample) gives the same parameter gradients as a sum of parts."""
    lenet.seed(0)
    model = lenet.LeNet5()
    x = rng.random((17, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 17)
    F.cross_entropy(model(x), y).backward()
    full = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    for part in (slice(0, 16), slice(16, 17)):  # mean over 17 = (16 * mean16 + 1 * mean1) / 17
        n = part.stop - part.start
        loss = F.cross_entropy(model(x[part]), y[part])
        loss.backward(np.array(n / 17, np.float32))
    for f, p in zip(full, model.parameters()):
        np.testing.assert_allclose(p.grad, f, rtol=2e-4, atol=2e-6)


def test_module_parameters_and_state_dict(rng):
    model = lenet.LeNet5()
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["layers.0.weight", "layers.0.bias"] and len(names) == 10
    assert model.num_parameters() == 61706
    assert lenet.CoreMLNet().num_parameters() == 585958
    state = model.state_dict()
    other = lenet.LeNet5(rng=np.random.default_rng(99))
    assert not np.array_equal(other.state_dict()["layers.0.weight"], state["layers.0.weight"])
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    bad = dict(state)
    bad["layers.0.weight"] = np.zeros((1, 1))
    with pytest.raises(ValueError, match="layers.0.weight"):
        other.load_state_dict(bad)
    del bad["layers.0.weight"]
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict(bad)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_parameters_and_optimiser_buffers_start_on_cache_lines(rng, name):
    """New layers' parameters, the optimiser's flat buffers and each parameter's view of them start on a 64-byte
    line (the kernels load whole lines); the padding between parameters stays zero through steps with weight
    decay."""
    model = lenet.LeNet5()
    assert all(p.data.ctypes.data % 64 == 0 for p in model.parameters())
    opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1) if name == "sgd" else
           optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1))
    buffers = [opt.flat, opt.flat_grad, *opt._buffers().values()]
    assert all(b.ctypes.data % 64 == 0 and b.size == opt.flat.size for b in buffers)
    assert all(p.data.ctypes.data % 64 == 0 and p.grad.ctypes.data % 64 == 0 for p in model.parameters())
    padding = np.ones(opt.flat.size, bool)
    for p in model.parameters():
        start = (p.data.ctypes.data - opt.flat.ctypes.data) // 4
        padding[start : start + p.data.size] = False
    assert padding.sum() == opt.flat.size - sum(p.data.size for p in model.parameters()) > 0
    x, y = rng.random((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(not b[padding].any() for b in buffers) and opt.flat[~padding].any()


def test_optimizer_keeps_parameters_as_views_of_one_buffer(rng):
    model = lenet.LeNet5()
    before = model.state_dict()
    opt = optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        assert np.shares_memory(p.data, opt.flat) and np.shares_memory(p.grad, opt.flat_grad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model.load_state_dict(before)  # in place: still views
    assert all(np.shares_memory(p.data, opt.flat) for p in model.parameters())
    x, y = rng.random((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    F.cross_entropy(model(x), y).backward()
    g = [p.grad.copy() for p in model.parameters()]
    opt.step()
    for p, g0, (k, w0) in zip(model.parameters(), g, before.items()):
        np.testing.assert_allclose(p.data, w0 - 0.1 * g0, rtol=1e-5, atol=1e-7)
    opt.zero_grad()
    assert not opt.flat_grad.any()


def test_training_is_reproducible_for_a_seed_whatever_the_thread_count(rng):
    images = (rng.random((300, 28, 28)) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, 300)

    def run(threads):
        lenet.set_num_threads(threads)
        lenet.seed(7)
        model = lenet.LeNet5()
        trainer = lenet.Trainer(model, optim.SGD(model.parameters(), 0.05, momentum=0.9), batch_size=32, seed=5,
                                log=None)
        trainer.fit(images, labels, 2)
        return model.state_dict()

    threads = lenet.get_num_threads()
    try:
        a, b = run(2), run(2)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        c = run(1)
        for k in a:  # reductions are per block, summed in block order: bit-identical on any thread count
            np.testing.assert_array_equal(a[k], c[k])
    finally:
        lenet.set_num_threads(threads)


@pytest.mark.parametrize("order", ["relu_pool", "pool_relu"])
def test_sequential_fuses_relu_and_maxpool_with_identical_results(rng, order):
    x = rng.standard_normal((19, 3, 8, 8)).astype(np.float32)
    x[0, 0, :2, :2] = -1.0  # a window with no positive value: no gradient at all
    layers = [nn.ReLU(), nn.MaxPool2d(2)] if order == "relu_pool" else [nn.MaxPool2d(2), nn.ReLU()]
    fused = nn.Sequential(*layers)
    assert len(fused._plan) == 1
    probe = rng.standard_normal((19, 3, 4, 4)).astype(np.float32)
    outputs, grads = [], []
    for run in (fused, lambda t: F.max_pool2d(F.relu(F.to_lanes(t)), 2)):
        t = Tensor(x, requires_grad=True)
        out = run(t)
        out.backward(lenet.tensor._to_lanes(probe, out.lanes))
        outputs.append(out.numpy())
        grads.append(t.grad)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(grads[0], grads[1])
    assert not grads[0][0, 0, :2, :2].any()


@pytest.mark.parametrize("batch", [1, 19])
def test_sequential_fuses_linear_and_relu_with_identical_results(rng, batch):
    lin = nn.Linear(13, 7)
    assert len(nn.Sequential(lin, nn.ReLU())._plan) == 1 and len(nn.Sequential(nn.ReLU(), lin)._plan) == 2
    x = rng.standard_normal((batch, 13)).astype(np.float32)
    x[0] = 0.0
    lin.bias.data[:3] = 0.0  # outputs of exactly 0 for the first sample: the ReLU passes no gradient there
    probe = rng.standard_normal((batch, 7)).astype(np.float32)
    results = []
    for run in (nn.Sequential(lin, nn.ReLU()), lambda t: F.relu(F.linear(t, lin.weight, lin.bias))):
        lin.zero_grad()
        t = Tensor(x, requires_grad=True)
        out = run(t)
        out.backward(lenet.tensor._to_lanes(probe, out.lanes))
        results.append([out.numpy(), t.grad, lin.weight.grad.copy(), lin.bias.grad.copy()])
    assert (results[0][0][0, :3] == 0.0).all()  # the first sample's first 3 outputs are exactly 0
    for fused, separate in zip(*results):
        np.testing.assert_array_equal(fused, separate)


def test_layers_repr_and_sequential():
    model = lenet.LeNet5()
    text = repr(model)
    assert "Conv2d(1, 6, kernel_size=(5, 5)" in text and "Linear(84, 10)" in text
    assert len(model) == 12 and isinstance(model[0], nn.Conv2d)


def test_ops_from_several_python_threads_run_safely(rng):
    """Kernels release the GIL; ops called from several Python threads take turns on the engine."""
    import threading

    lenet.seed(0)
    model = lenet.LeNet5()
    x = rng.random((40, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    want = [p.grad.copy() for p in model.parameters()]
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                with lenet.no_grad():
                    results.append(model(x).numpy())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):  # training ops on this thread meanwhile
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    for p, w in zip(model.parameters(), want):
        np.testing.assert_array_equal(p.grad, w)
