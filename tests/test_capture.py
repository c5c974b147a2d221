"""The captured training step computes what the autograd graph computes."""
import numpy as np
import pytest

import lenet
import lenet.functional as F
from lenet import nn, optim
from lenet.capture import CapturedStep
from models import dead_rows_model, zero_features_model


def autograd_grads(model, x, y):
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return float(loss.data), [None if p.grad is None else p.grad.copy() for p in model.parameters()]


MODELS = {
    "lenet5": lambda: lenet.LeNet5(),
    "coreml": lambda: lenet.CoreMLNet(),
    # The first convolution's output fills more than L2 at 16 lanes (25 x 25 x 32): fused with its pooling in
    # training too, here with odd sizes (the last row and column dropped) and the ReLU after the pooling.
    "big_first_conv_odd": lambda: nn.Sequential(
        nn.Conv2d(1, 32, 4), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 12 * 12, 24), nn.ReLU(),
        nn.Linear(24, 10)),
    # A 3x3 first convolution fused with a pooling that has no ReLU (tanh after it), and a channel count (27) that
    # leaves a remainder in every weight-gradient tile.
    "three_by_three_no_relu": lambda: nn.Sequential(
        nn.Conv2d(1, 27, 3), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(27 * 13 * 13, 16), nn.ReLU(),
        nn.Linear(16, 10)),
    # Later convolutions fused with their pooling too (on AVX-512), with odd outputs (the last row and column
    # dropped): a padded 3x3 (13 x 13) with a tanh after the pooling and 10 channels (a remainder in the 6-channel
    # tiles), then a 2x2 as in the CoreML graph (5 x 5).
    "later_conv_pool_odd": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 10, 3, padding=1), nn.MaxPool2d(2), nn.Tanh(),
        nn.Conv2d(10, 8, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)),
    "tanh_avgpool_strided": lambda: nn.Sequential(
        nn.Conv2d(1, 5, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(5, 7, 3, padding=1),
        nn.MaxPool2d(3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(7 * 3 * 3, 10)),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch", [1, 16, 37])
def test_captured_gradients_match_autograd(isa, rng, name, batch):
    lenet.seed(3)
    model = MODELS[name]()
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(60)[:batch], rng.integers(0, 10, batch)
    loss, want = autograd_grads(model, F.image_batch(images, idx, 16), y)
    step = CapturedStep(model)
    got_loss = step(F.image_batch(images, idx, 16).data, y)
    assert got_loss == pytest.approx(loss, rel=1e-5)
    for p, w in zip(model.parameters(), want):
        np.testing.assert_allclose(p.grad, w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())))


def dead_rows_hold(want):
    dw1 = want[2]  # fc1's dW [40][8 * 169]: units 0-9 dead (and some others), most alive; channels 0 and 2 dead
    assert not dw1[:10].any() and dw1[10:].any(axis=1).sum() >= 10
    assert not dw1[:, :169].any() and not dw1[:, 338:507].any() and dw1[10:, 169:338].any()


def silent_channels_learn(want):
    assert want[0][[0, 2]].any(axis=(1, 2, 3)).all()  # their features are 0, their gradients are not


# Dense layers' rows that add nothing, and features that are 0 without a ReLU below (whose input gradient counts).
ZERO_ROWS_MODELS = {"dead_rows": (dead_rows_model, dead_rows_hold),
                    "zero_features": (zero_features_model, silent_channels_learn)}


@pytest.mark.parametrize("name", list(ZERO_ROWS_MODELS))
@pytest.mark.parametrize("batch", [16, 37, 128])
def test_captured_gradients_with_rows_of_zeros(isa, rng, name, batch):
    make_model, precondition = ZERO_ROWS_MODELS[name]
    images = rng.integers(0, 256, (140, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(140)[:batch], rng.integers(0, 10, batch)
    lenet.seed(3)
    model = make_model()
    loss, want = autograd_grads(model, F.image_batch(images, idx, 16), y)
    precondition(want)
    step = CapturedStep(model)
    for p in model.parameters():
        p.grad[...] = 7.0  # the step overwrites every gradient, the dead rows' included
    assert step.run_images(images, idx, y) == pytest.approx(loss, rel=1e-5)
    for p, w in zip(model.parameters(), want):
        np.testing.assert_allclose(p.grad, w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("name", ["lenet5", "coreml"])
@pytest.mark.parametrize("batch", [1, 16, 37])
@pytest.mark.parametrize("threads", [1, 2])
def test_step_on_gathered_images_equals_step_on_packed_blocks(isa, rng, name, batch, threads):
    """run_images (each block's thread gathers its own images) gives bit-identical losses and gradients to the step
    on a batch packed beforehand, at any thread count."""
    images = rng.integers(0, 256, (70, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(70)[:batch], rng.integers(0, 10, batch)
    results = []
    old = lenet.get_num_threads()
    try:
        lenet.set_num_threads(threads)
        for gathered in (False, True):
            lenet.seed(4)
            model = MODELS[name]()
            step = CapturedStep(model)
            loss = step.run_images(images, idx, y) if gathered else step(F.image_batch(images, idx, 16).data, y)
            results.append((loss, [p.grad.copy() for p in model.parameters()]))
    finally:
        lenet.set_num_threads(old)
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["lenet5", "coreml"])
@pytest.mark.parametrize("batch", [37, 128])
def test_step_does_not_depend_on_the_thread_count(isa, rng, name, batch):
    """Bit-identical losses and gradients on 1, 2 and 3 threads. (The CoreML graph's large dense head runs on groups
    of a thread's blocks, so the grouping changes with the thread count: 3, 2 and 1 blocks per group for 37
    samples, with a partial last group.)"""
    images = rng.integers(0, 256, (150, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(150)[:batch], rng.integers(0, 10, batch)
    results = []
    old = lenet.get_num_threads()
    try:
        for threads in (1, 2, 3):
            lenet.set_num_threads(threads)
            lenet.seed(6)
            model = MODELS[name]()
            loss = CapturedStep(model).run_images(images, idx, y)
            results.append((loss, [p.grad.copy() for p in model.parameters()]))
    finally:
        lenet.set_num_threads(old)
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for a, b in zip(grads, results[0][1]):
            assert np.array_equal(a, b)


def test_step_on_gathered_images_refuses_bad_input(rng):
    step = CapturedStep(lenet.LeNet5())
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"indices\[1\] = 10 is outside \[0, 10\)"):
        step.run_images(images, [3, 10], [1, 2])
    with pytest.raises(ValueError, match="images of 729 pixels for a model that takes 784"):
        step.run_images(images[:, :27, :27].copy(), [0], [1])
    with pytest.raises(TypeError, match="dtype uint8"):
        step.run_images(images.astype(np.float32), [0], [1])
    for labels in ([1, 10], [-1, 2], np.array([1, 2**32 + 1], np.uint64)):  # -1 is not padding; no wrap to int32
        with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
            step.run_images(images, [0, 1], labels)
        with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
            step(F.image_batch(images, [0, 1], 16).data, labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        step.run_images(images, [0, 1], [1])


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("frozen", [(0,), (0, 2), "all_but_last", (-1,), "bias_only"])
def test_captured_gradients_with_frozen_layers(isa, rng, name, frozen):
    """Frozen parameters get no gradient (their .grad is left alone) and the others get autograd's, whichever
    layers are frozen: the first, several, all but the last, the last, or only one bias."""
    lenet.seed(5)
    model = MODELS[name]()
    layers = [m for m in model.layers if m.parameters()]
    if frozen == "all_but_last":
        chosen = [p for m in layers[:-1] for p in m.parameters()]
    elif frozen == "bias_only":
        chosen = [layers[0].bias]
    else:
        chosen = [p for i in frozen for p in layers[i].parameters()]
    for p in chosen:
        p.requires_grad = False
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    idx, y = rng.permutation(40)[:21], rng.integers(0, 10, 21)
    loss, want = autograd_grads(model, F.image_batch(images, idx, 16), y)  # frozen ones: None
    sentinel = [np.full_like(p.data, 7.0) for p in chosen]
    for p, v in zip(chosen, sentinel):
        p.grad = v
    step = CapturedStep(model)
    assert step(F.image_batch(images, idx, 16).data, y) == pytest.approx(loss, rel=1e-5)
    for p, w in zip(model.parameters(), want):
        if any(p is c for c in chosen):
            assert w is None and (p.grad == 7.0).all()
        else:
            np.testing.assert_allclose(p.grad, w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())))
    chosen[0].requires_grad = True
    with pytest.raises(RuntimeError, match="frozen or unfrozen"):
        step(F.image_batch(images, idx, 16).data, y)


def test_captured_training_matches_autograd_training(mnist_or_random):
    images, labels = mnist_or_random
    results = []
    for captured in (False, True):
        lenet.seed(0)
        model = lenet.LeNet5()
        trainer = lenet.Trainer(model, optim.SGD(model.parameters(), 0.05, momentum=0.9), batch_size=64,
                                captured=captured, log=None)
        trainer.fit(images, labels, 1)
        results.append(trainer.evaluate(images[:2000], labels[:2000])["accuracy"])
    assert abs(results[0] - results[1]) < 0.01, results


@pytest.fixture
def mnist_or_random(rng):
    images = rng.integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    return images, (images[:, 10:18, 10:18].mean(axis=(1, 2)) // 26).astype(np.int64).clip(0, 9)


def test_capture_errors(rng):
    class Scale(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="expected a lenet.nn.Sequential"):
        CapturedStep(nn.Linear(3, 4))
    with pytest.raises(TypeError, match=r"Scale\) has no graph form"):
        CapturedStep(nn.Sequential(nn.Flatten(), Scale(), nn.Linear(784, 10)))
    with pytest.raises(ValueError, match="ends in 7 outputs, expected 10"):
        CapturedStep(nn.Sequential(nn.Flatten(), nn.Linear(784, 7)))
    with pytest.raises(ValueError, match="must end in a linear layer"):
        CapturedStep(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU()))
    with pytest.raises(ValueError, match=r"layer 1 \(linear\): in_features is 700"):
        CapturedStep(nn.Sequential(nn.Flatten(), nn.Linear(700, 10)))
    with pytest.raises(ValueError, match="needs flat features"):
        CapturedStep(nn.Sequential(nn.Linear(784, 10)))
    model = lenet.LeNet5()
    step = CapturedStep(model)
    x = F.image_batch(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), [0, 1, 2, 3], 16).data
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), got range \[0, 10\]"):
        step(x, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="lanes layout"):
        step(np.zeros((1, 1, 28, 28, 8), np.float32), np.array([0]))
    model.parameters()[0].data = model.parameters()[0].data.copy()
    with pytest.raises(RuntimeError, match="replaced, or a layer frozen or unfrozen, after capture"):
        step(x, np.array([0, 1, 2, 3]))


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=1e-3, weight_decay=1e-3),
}


def _train_steps(name, make_opt, images, batches, fused, frozen=(), opt_params=None):
    """Three captured steps; fused: the optimiser's update inside the step, else optimizer.step() after it."""
    lenet.seed(8)
    model = MODELS[name]()
    for i in frozen:
        for p in [m for m in model.layers if m.parameters()][i].parameters():
            p.requires_grad = False
    opt = make_opt(opt_params(model) if opt_params else model.trainable_parameters())
    step = CapturedStep(model)
    losses = []
    for idx, y in batches:
        if fused:
            losses.append(step.run_images(images, idx, y, opt))
        else:
            losses.append(step.run_images(images, idx, y))
            opt.step()
    return losses, [p.data.copy() for p in model.parameters()], step, opt


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("threads", [1, 2])
def test_update_inside_the_step_is_bit_identical_to_optimizer_step(isa, rng, name, opt, threads):
    """The optimiser's update applied by the step to each gradient range as it is computed gives exactly the
    weights of optimizer.step() after the step, over several steps (the state carries over)."""
    images = rng.integers(0, 256, (90, 28, 28), dtype=np.uint8)
    batches = [(rng.permutation(90)[:b], rng.integers(0, 10, b)) for b in (37, 16, 5)]
    old = lenet.get_num_threads()
    try:
        lenet.set_num_threads(threads)
        want = _train_steps(name, OPTIMIZERS[opt], images, batches, fused=False)
        got = _train_steps(name, OPTIMIZERS[opt], images, batches, fused=True)
    finally:
        lenet.set_num_threads(old)
    step, optimizer = got[2], got[3]
    assert step.fusable(optimizer) and optimizer.steps == 3
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("case", ["frozen_first", "optimiser_on_a_subset"])
def test_update_inside_the_step_with_frozen_layers_or_a_partial_optimiser(rng, case):
    """With frozen layers the optimiser over the trainable parameters still fuses; an optimiser over only some of
    the trained parameters cannot, and the step falls back to optimizer.step() with the same results."""
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    batches = [(rng.permutation(50)[:b], rng.integers(0, 10, b)) for b in (21, 40)]
    kw = {"frozen": (0,)} if case == "frozen_first" else {"opt_params": lambda m: m.layers[-1].parameters()}
    want = _train_steps("lenet5", OPTIMIZERS["adam"], images, batches, fused=False, **kw)
    got = _train_steps("lenet5", OPTIMIZERS["adam"], images, batches, fused=True, **kw)
    assert got[2].fusable(got[3]) == (case == "frozen_first")
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        assert np.array_equal(a, b)


def test_update_inside_the_step_refuses_foreign_buffers(rng):
    lenet.seed(0)
    model = lenet.LeNet5()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = CapturedStep(model)._step
    good = opt.next_update()
    step.check_update(good)
    other = optim.SGD(lenet.LeNet5().parameters(), lr=0.1).next_update()
    with pytest.raises(ValueError, match="not the captured model's trainable ones"):
        step.check_update(other)
    with pytest.raises(ValueError, match="state must hold 1 buffer"):
        step.check_update({**good, "state": []})
    with pytest.raises(ValueError, match="update kind must be 'sgd' or 'adam'"):
        step.check_update({**good, "kind": "rmsprop"})
    with pytest.raises(ValueError, match="update has no 'lr'"):
        step.check_update({k: v for k, v in good.items() if k != "lr"})
    with pytest.raises(ValueError, match="update grads has shape"):
        step.check_update({**good, "grads": good["grads"][:-1]})
    with pytest.raises(ValueError, match="must be writable"):
        frozen = good["params"].copy()
        frozen.flags.writeable = False
        step.check_update({**good, "params": frozen})
    small = optim.SGD(model.parameters()[:-2], lr=0.1).next_update()  # re-homes the first ones only
    with pytest.raises(ValueError, match="not the captured model's|must be the same"):
        CapturedStep(model)._step.check_update(small)


@pytest.mark.parametrize("where", ["first", "last"])
def test_update_inside_the_step_refuses_an_optimiser_with_an_extra_parameter(where):
    """The flat buffers' zero padding between parameters is allowed; a parameter the step does not train is not,
    wherever it sits (it would never be updated)."""
    lenet.seed(0)
    model = lenet.LeNet5()
    extra = lenet.Tensor(np.ones(5, np.float32), requires_grad=True)
    params = [extra] + model.parameters() if where == "first" else model.parameters() + [extra]
    update = optim.SGD(params, lr=0.1).next_update()
    with pytest.raises(ValueError, match="one starts at float 16, expected 0" if where == "first" else
                       "must be the same"):
        CapturedStep(model)._step.check_update(update)


def test_step_takes_a_step_of_an_optimiser_of_its_own_kind(rng):
    """An optimiser with no fused form (any object with step()) gets its step() called after the step."""
    class Halve:
        def __init__(self, params):
            self.params, self.steps = params, 0

        def next_update(self):
            return None

        def step(self):
            self.steps += 1
            for p in self.params:
                p.data -= 0.5 * p.grad

    lenet.seed(1)
    model = lenet.LeNet5()
    opt = Halve(model.parameters())
    before = [p.data.copy() for p in model.parameters()]
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    step = CapturedStep(model)
    step.run_images(images, np.arange(20), rng.integers(0, 10, 20), opt)
    assert opt.steps == 1 and not step.fusable(opt)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b - 0.5 * p.grad)


def _trainer_run(name, opt, images, labels, batches, chunked, schedule):
    lenet.seed(8)
    model = MODELS[name]()
    optimizer = OPTIMIZERS[opt](model.parameters())
    trainer = lenet.Trainer(model, optimizer, batch_size=37, log=None, captured=True, lr_schedule=schedule)
    trainer.plan_schedule(1, 37 * len(batches))
    if chunked:
        losses = trainer.run_batches(images, labels, batches)
    else:
        losses = [trainer.step(images, labels, idx) for idx in batches]
    return losses, [p.data.copy() for p in model.parameters()], optimizer


@pytest.mark.parametrize("name", ["lenet5", "coreml"])
@pytest.mark.parametrize("opt", ["nesterov", "adam"])
@pytest.mark.parametrize("threads", [1, 2])
def test_steps_in_one_engine_call_are_bit_identical_to_one_call_per_step(rng, name, opt, threads):
    """Trainer.run_batches sends each run of equal-sized batches to the engine in one call (with each step's
    learning rate of a cosine schedule and Adam's step count): the same losses and weights, bit for bit, as one
    step() per batch, and the optimiser's count and last learning rate are the same."""
    images = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 200).astype(np.uint8)
    batches = [rng.permutation(200)[:37] for _ in range(4)] + [rng.permutation(200)[:11]]  # a shorter last one
    old = lenet.get_num_threads()
    try:
        lenet.set_num_threads(threads)
        want = _trainer_run(name, opt, images, labels, batches, chunked=False, schedule="cosine")
        got = _trainer_run(name, opt, images, labels, batches, chunked=True, schedule="cosine")
    finally:
        lenet.set_num_threads(old)
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        assert np.array_equal(a, b)
    assert got[2].steps == want[2].steps == 5 and got[2].lr == want[2].lr


def test_steps_in_one_engine_call_refuse_bad_input(rng):
    lenet.seed(0)
    model = lenet.LeNet5()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = CapturedStep(model)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    idx = rng.integers(0, 50, (3, 20))
    y = rng.integers(0, 10, (3, 20))
    with pytest.raises(ValueError, match=r"indices must be \(steps, batch\)"):
        step.run_image_batches(images, idx[0], y[0], opt, [0.1])
    with pytest.raises(ValueError, match=r"labels must have shape \(3, 20\)"):
        step.run_image_batches(images, idx, y[:2], opt, [0.1] * 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        step.run_image_batches(images, idx, y + 5, opt, [0.1] * 3)
    with pytest.raises(ValueError, match="is outside"):
        step.run_image_batches(images, idx + 40, y, opt, [0.1] * 3)
    with pytest.raises(ValueError, match="lrs has shape"):
        step.run_image_batches(images, idx, y, opt, [0.1] * 2)
    with pytest.raises(ValueError, match="not a finite learning rate"):
        step.run_image_batches(images, idx, y, opt, [0.1, float("nan"), 0.1])
    other = optim.SGD(lenet.LeNet5().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fusable"):
        step.run_image_batches(images, idx, y, other, [0.1] * 3)
    assert opt.steps == 0 and np.isfinite(model.parameters()[0].data).all()
    losses = step.run_image_batches(images, idx, y, opt, [0.1] * 3)
    assert losses.shape == (3,) and np.isfinite(losses).all() and opt.steps == 3
