"""Bad input raises a clear Python exception naming what is wrong; never a crash."""
import os
import subprocess
import sys

import numpy as np
import pytest

import lenet
import lenet.functional as F
from lenet import _core, optim

X = np.zeros((1, 1, 8, 8, 16), np.float32)
W = np.zeros((2, 1, 3, 3), np.float32)
B = np.zeros(2, np.float32)


def test_wrong_dtype():
    with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
        _core.conv2d_forward(X.astype(np.float64), W, B)
    with pytest.raises(TypeError, match="weight must have dtype float32"):
        _core.linear_forward(np.zeros((1, 4, 16), np.float32), np.zeros((2, 4), np.int32), None)
    with pytest.raises(TypeError, match="must be a numpy array"):
        _core.activation_forward("relu", [1.0, 2.0])
    with pytest.raises(TypeError, match="labels must have dtype int32"):
        _core.softmax_xent(np.zeros((1, 10, 16), np.float32), np.zeros(16, np.int64), 1.0)


def test_wrong_shape():
    with pytest.raises(ValueError, match="x must have 5 dimensions"):
        _core.conv2d_forward(X[0], W, B)
    x, w, dy = np.zeros((1, 4, 16), np.float32), np.zeros((2, 4), np.float32), np.zeros((1, 2, 16), np.float32)
    with pytest.raises(ValueError, match=r"output has shape \(1, 3, 16\)"):  # a fused ReLU's output
        _core.linear_backward(x, w, dy, np.zeros_like(w), None, True, np.zeros((1, 3, 16), np.float32))
    with pytest.raises(ValueError, match=r"weight has shape \(2, 3, 3, 3\): dimension 1 must be 1"):
        _core.conv2d_forward(X, np.zeros((2, 3, 3, 3), np.float32), B)
    with pytest.raises(ValueError, match="bias has shape"):
        _core.conv2d_forward(X, W, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        _core.conv2d_forward(X, np.zeros((2, 1, 9, 9), np.float32), None)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        _core.conv2d_forward(X, W, B, (0, 1))
    with pytest.raises(ValueError, match="grad_output has shape"):
        _core.conv2d_backward(X, W, np.zeros((1, 2, 5, 5, 16), np.float32), np.zeros_like(W), None)
    with pytest.raises(ValueError, match="grad has shape"):
        _core.sgd_update(np.zeros(5, np.float32), np.zeros(4, np.float32), np.zeros(5, np.float32), 0.1, 0, 0, False)


def test_non_contiguous_and_read_only():
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.conv2d_forward(np.zeros((1, 1, 8, 8, 32), np.float32)[..., ::2], W, B)
    frozen = np.zeros_like(W)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="grad_weight must be writable"):
        _core.conv2d_backward(X, W, np.zeros((1, 2, 6, 6, 16), np.float32), frozen, None)


def test_bad_values():
    with pytest.raises(ValueError, match=r"labels\[3\] = 10 is outside \[0, 10\)"):
        _core.softmax_xent(np.zeros((1, 10, 16), np.float32), np.array([0, 1, 2, 10] + [0] * 12, np.int32), 1.0)
    with pytest.raises(ValueError, match="algo must be"):
        _core.conv2d_forward(X, W, B, algo="fft")
    with pytest.raises(ValueError, match="'direct' needs stride 1, a table with direct kernels and 16 lanes"):
        _core.conv2d_backward(np.zeros((1, 1, 8, 8, 4), np.float32), W, np.zeros((1, 2, 6, 6, 4), np.float32),
                              np.zeros_like(W), None, algo="direct")
    with pytest.raises(ValueError, match="'direct' needs stride 1, a table with direct kernels and 16 lanes"):
        _core.conv2d_forward(np.zeros((1, 1, 8, 8, 4), np.float32), W, B, algo="direct")
    with pytest.raises(ValueError, match="fuses only with max pooling"):
        _core.pool2d_forward("avg", X, (2, 2), (2, 2), True)
    with pytest.raises(ValueError, match="pool kind"):
        _core.pool2d_forward("min", X, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="threads must be in"):
        lenet.set_num_threads(0)
    with pytest.raises(ValueError, match="not available"):
        lenet.set_isa("sse9")


def test_pack_images_errors():
    images = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=r"indices\[1\] = 4 is outside \[0, 4\)"):
        _core.pack_images(images, np.array([0, 4]), 16)
    with pytest.raises(TypeError, match="images must have dtype uint8"):
        _core.pack_images(images.astype(np.float32), np.array([0]), 16)
    with pytest.raises(ValueError, match="images must be"):
        _core.pack_images(np.zeros((4, 2, 28, 28), np.uint8), np.array([0]), 16)
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        _core.pack_images(images, np.array([0]), 0)


def test_python_layer_errors(rng):
    model = lenet.LeNet5()
    with pytest.raises(ValueError, match="conv2d expects a"):
        model(np.zeros((4, 28, 28), np.float32))
    with pytest.raises(ValueError, match="labels must have shape"):
        F.cross_entropy(np.zeros((4, 10), np.float32), np.zeros(5, np.int64))
    for labels in (np.array([0, 1, 2, -1]), np.array([0, 1, 2, 2**32 + 3], np.uint64)):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
            F.cross_entropy(np.zeros((4, 10), np.float32), labels)
    with pytest.raises(TypeError, match="labels must be integers"):
        F.cross_entropy(np.zeros((4, 10), np.float32), np.zeros(4))
    with pytest.raises(TypeError, match="numeric"):
        lenet.Tensor(np.array(["a"]))
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(model.parameters(), lr=0)
    with pytest.raises(ValueError, match="no parameters"):
        optim.Adam([], lr=1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.1), batch_size=0)
    with pytest.raises(TypeError, match="kernel_size"):
        lenet.nn.Conv2d(1, 2, "3")


@pytest.mark.parametrize("make, match", [
    (lambda ps: optim.SGD(ps, lr=float("inf")), "learning rate must be positive and finite"),
    (lambda ps: optim.Adam(ps, lr=float("nan")), "learning rate must be positive and finite"),
    (lambda ps: optim.SGD(ps, lr="fast"), "learning rate must be a number"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0 and finite"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=float("nan")), "weight_decay must be >= 0 and finite"),
    (lambda ps: optim.Adam(ps, weight_decay=-1e-4), "weight_decay must be >= 0 and finite"),
    (lambda ps: optim.Adam(ps, eps=0.0), "eps must be positive and finite"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps must be positive and finite"),
    (lambda ps: optim.Adam(ps, eps=float("nan")), "eps must be positive and finite"),
    (lambda ps: optim.Adam(ps, betas=(0.9,)), "betas must be two numbers"),
    (lambda ps: optim.Adam(ps, betas=0.9), "betas must be two numbers"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    (lambda ps: optim.Adam(ps, betas=(float("nan"), 0.999)), r"betas\[0\] must be in \[0, 1\)"),
])
def test_optimiser_hyper_parameters_are_checked(make, match):
    # each would otherwise train into NaN or infinite weights without a word
    error = TypeError if "a number" in match else ValueError
    with pytest.raises(error, match=match):
        make(lenet.LeNet5().parameters())


@pytest.mark.parametrize("key, value, match", [("lr", float("nan"), "learning rate must be positive"),
                                               ("lr", -0.1, "learning rate must be positive"),
                                               ("steps", -1, "steps: must be >= 0")])
def test_optimiser_state_with_bad_values_is_refused(key, value, match):
    opt = optim.Adam(lenet.LeNet5().parameters())
    state = opt.state_dict()
    state[key] = value
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    assert opt.state_dict()["lr"] == 1e-3 and opt.steps == 0  # left as it was


def test_optimiser_keeps_valid_hyper_parameters():
    ps = lenet.LeNet5().parameters()
    adam = optim.Adam(ps, lr=2e-3, betas=[0.8, 0.99], eps=1e-7, weight_decay=0.0)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (2e-3, (0.8, 0.99), 1e-7, 0.0)
    sgd = optim.SGD(lenet.LeNet5().parameters(), lr=np.float32(0.5), momentum=0, weight_decay=1e-4, nesterov=True)
    assert (sgd.lr, sgd.momentum, sgd.weight_decay, sgd.nesterov) == (0.5, 0.0, 1e-4, True)
    assert all(type(v) is float for v in (adam.lr, *adam.betas, adam.eps, sgd.lr, sgd.momentum))


@pytest.mark.parametrize("make, error, match", [
    (lambda: lenet.nn.Linear(0, 5), ValueError, "in_features must be an int >= 1"),
    (lambda: lenet.nn.Linear(5, -1), ValueError, "out_features must be an int >= 1"),
    (lambda: lenet.nn.Linear(2.0, 5), TypeError, "in_features must be an int >= 1"),
    (lambda: lenet.nn.Conv2d(0, 2, 3), ValueError, "in_channels must be an int >= 1"),
    (lambda: lenet.nn.Conv2d(1, 2, 0), ValueError, "kernel_size must be at least 1"),
    (lambda: lenet.nn.Conv2d(1, 2, 3, stride=(1, 0)), ValueError, "stride must be at least 1"),
    (lambda: lenet.nn.Conv2d(1, 2, 3, padding=-1), ValueError, "padding must be at least 0"),
    (lambda: lenet.nn.MaxPool2d(0), ValueError, "kernel_size must be at least 1"),
    (lambda: lenet.nn.AvgPool2d(2, stride=0), ValueError, "stride must be at least 1"),
])
def test_layer_sizes_are_checked_when_built(make, error, match):
    # before: a ZeroDivisionError or "math domain error" from the initialisation, or a layer that failed when called
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), ("a", TypeError), (None, TypeError)])
def test_seed_checks_its_value(value, error):
    with pytest.raises(error, match="seed must be an int >= 0"):
        lenet.seed(value)
    model = lenet.LeNet5()
    with pytest.raises(error, match="seed must be an int >= 0"):
        lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.1), seed=value)
    lenet.seed(np.int64(3))  # a numpy integer is an integer
    a = lenet.LeNet5().state_dict()
    lenet.seed(3)
    assert all(np.array_equal(a[k], v) for k, v in lenet.LeNet5().state_dict().items())


@pytest.mark.parametrize("epochs, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)])
def test_fit_checks_its_epoch_count(epochs, error):
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.1), batch_size=64, log=None)
    with pytest.raises(error, match="epochs must be an int >= 0"):
        trainer.fit(np.zeros((64, 28, 28), np.uint8), np.zeros(64, np.int64), epochs)
    assert trainer.history == [] and trainer.optimizer.steps == 0


def test_forced_isa_from_environment(tmp_path):  # run outside the source tree: import the installed package
    code = "import lenet; print(lenet.kernels()['isa'], lenet.kernels()['source'])"
    env = dict(os.environ, LENET_ISA="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["reference", "LENET_ISA"]
    env["LENET_ISA"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "LENET_ISA: instruction set 'nonsense' is not available" in bad.stderr
    assert "Segmentation" not in bad.stderr
