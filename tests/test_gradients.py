"""Every op's gradient, through the autograd layer, against central finite differences of its forward."""
import numpy as np
import pytest

import lenet
import lenet.functional as F
from lenet import Tensor
from lenet.tensor import _to_lanes


def objective(out: Tensor, probe: np.ndarray) -> float:
    return float((out.numpy().astype(np.float64) * probe).sum())


def gradcheck(f, arrays, rng, eps=1e-2, samples=24, tol=2e-2):
    """Compares d<f(*arrays), probe>/d(array) from backward() with central differences at sampled entries."""
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = f(*tensors)
    probe = rng.standard_normal(out.shape)
    seed_grad = _to_lanes(probe.astype(np.float32), out.lanes) if out.batch is not None else probe.astype(np.float32)
    out.backward(seed_grad)
    for t, a in zip(tensors, arrays):
        assert t.grad is not None and t.grad.shape == a.shape
        flat = a.reshape(-1)
        for i in rng.choice(flat.size, size=min(samples, flat.size), replace=False):
            saved = flat[i]
            flat[i] = saved + eps
            with lenet.no_grad():
                up = objective(f(*[Tensor(x) for x in arrays]), probe)
            flat[i] = saved - eps
            with lenet.no_grad():
                down = objective(f(*[Tensor(x) for x in arrays]), probe)
            flat[i] = saved
            numeric = (up - down) / (2 * eps)
            analytic = float(t.grad.reshape(-1)[i])
            assert abs(analytic - numeric) <= tol * max(1.0, abs(numeric)), (i, analytic, numeric)


def spaced(rng, shape, gap=0.05):
    """Distinct values at least `gap` apart, away from 0: finite differences never cross a max or ReLU kink."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2 + 0.5) * gap
    return values.reshape(shape).astype(np.float32)


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 2), (2, 1), ((2, 1), (0, 1))])
@pytest.mark.parametrize("batch", [2, 17])
def test_conv2d(isa, rng, stride, padding, batch):
    x = rng.standard_normal((batch, 3, 8, 7)).astype(np.float32)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding), [x, w, b], rng)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), ((2, 3), 1)])
def test_pool2d(isa, rng, kind, kernel, stride):
    x = spaced(rng, (9, 2, 7, 8))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    gradcheck(lambda x: pool(x, kernel, stride), [x], rng, eps=1e-2)


def test_maxpool_fused_relu(isa, rng):
    x = spaced(rng, (9, 2, 6, 8))
    gradcheck(lambda x: F.max_pool2d(x, 2, relu=True), [x], rng, eps=1e-2)


@pytest.mark.parametrize("batch", [1, 16, 19])
def test_linear(isa, rng, batch):
    x = rng.standard_normal((batch, 13)).astype(np.float32)
    w = (rng.standard_normal((7, 13)) * 0.3).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    gradcheck(F.linear, [x, w, b], rng)


@pytest.mark.parametrize("act", [F.relu, F.tanh])
def test_activations(isa, rng, act):
    x = spaced(rng, (11, 3, 4, 5), gap=0.03)
    gradcheck(lambda x: act(F.to_lanes(x)), [x], rng, eps=5e-3)


def test_cross_entropy(isa, rng):
    logits = (rng.standard_normal((19, 10)) * 3).astype(np.float32)
    labels = rng.integers(0, 10, 19)
    gradcheck(lambda z: F.cross_entropy(z, labels), [logits], rng, eps=1e-2, tol=1e-2)


def test_flatten_and_layouts(isa, rng):
    x = rng.standard_normal((18, 2, 3, 3)).astype(np.float32)
    w = rng.standard_normal((5, 18)).astype(np.float32)
    gradcheck(lambda x, w: F.linear(F.flatten(F.to_lanes(x)), w), [x, w], rng)
    gradcheck(lambda x: F.from_lanes(F.relu(F.to_lanes(x))), [spaced(rng, (5, 4))], rng)


def test_lenet5_end_to_end(isa, rng):
    """The whole graph: conv, ReLU, pool, conv, ReLU, pool, flatten, three dense layers, loss."""
    lenet.seed(3)
    model = lenet.LeNet5()
    x = rng.random((17, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 17)
    params = model.parameters()
    F.cross_entropy(model(x), labels).backward()
    for p in params:
        analytic = p.grad.copy()
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, size=6, replace=False):
            saved = flat[i]
            with lenet.no_grad():
                flat[i] = saved + 1e-2
                up = float(F.cross_entropy(model(x), labels).data)
                flat[i] = saved - 1e-2
                down = float(F.cross_entropy(model(x), labels).data)
            flat[i] = saved
            numeric = (up - down) / 2e-2
            assert abs(analytic.reshape(-1)[i] - numeric) <= 2e-2 * max(1.0, abs(numeric)) + 2e-3
