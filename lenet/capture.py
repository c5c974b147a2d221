"""A captured training step: a Sequential model's forward, loss and backward recorded once and run in C++.

The Python layers stay the one definition of the graph: `CapturedStep` hands the engine their description
(lenet.graph.describe) with the parameter and gradient arrays, and the engine then runs each block of 16 samples
through every layer and back on one thread while its activations stay in cache, instead of one Python call and
one thread-pool wake-up per op. It computes exactly what `cross_entropy(model(x), y).backward()` computes,
with the gradients written into each parameter's `.grad`; given the optimiser, it also takes the optimiser's step,
applying the update to each range of parameters as soon as its gradient is final.
"""
from __future__ import annotations

import json
import warnings
import weakref

import numpy as np

from . import _core, graph
from .functional import lane_labels
from .tensor import grad_buffer

LANES = 16
PRECISIONS = ("fp32", "bf16")  # a captured step's arithmetic (CapturedStep's precision)


def check_precision(precision) -> None:
    """ValueError unless precision is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


class CapturedStep:
    """`step(images_in_lanes, labels[, optimizer])` or `step.run_images(images, indices, labels[, optimizer])` ->
    mean loss, with every trainable parameter's .grad set to its gradient (and the optimiser's step taken).

    Frozen parameters (requires_grad False, e.g. after Module.freeze) get none, and the backward pass stops at the
    first layer that has trainable parameters: fine-tuning the last layers costs little more than a forward pass.
    Which parameters are frozen is read here: capture again after freezing or unfreezing.

    precision: "fp32" (the default) or "bf16": the dense layers' three products (forward, input and weight
    gradients), the weight gradient of every convolution fused with its pooling but the first, and the input gradient
    of those with at least 16 input channels and at most 4 kernel taps (the CoreML graph's second) take their operands
    rounded to bfloat16 and sum in fp32, on Intel AMX or AVX512-BF16 (Intel from Cooper Lake, AMD from Zen 4) where the
    CPU has them (else on the reference loops, slowly).
    Everything else (the other convolution products, weights, gradients, biases, the optimiser's state) stays fp32.
    Opt-in: results are no longer those of the fp32 kernels."""

    def __init__(self, model, input_shape=(1, 28, 28), classes: int = 10, precision: str = "fp32"):
        check_precision(precision)
        if precision == "bf16" and _core.kernel_info()["bf16"]["isa"] == "reference":
            warnings.warn("precision='bf16' runs on the reference loops here (no AMX or AVX512-BF16, or another "
                          "instruction set than avx512 chosen): correct, but much slower than fp32", RuntimeWarning,
                          stacklevel=2)
        self.precision = precision
        self.params = graph.parameters(model)
        self._arrays = [(p.data, grad_buffer(p) if p.requires_grad else None) for p in self.params]
        self._step = _core.TrainStep(json.dumps(graph.describe(model, input_shape)), [d for d, _ in self._arrays],
                                     [g for _, g in self._arrays], precision)
        self._fusable = weakref.WeakKeyDictionary()  # optimiser -> whether its update runs inside the step
        if self._step.classes != classes:
            raise ValueError(f"the model ends in {self._step.classes} outputs, expected {classes} classes")

    def __call__(self, x: np.ndarray, labels, optimizer=None) -> float:
        """x: a batch in the lanes layout (nblk, C, H, W, 16), e.g. from lenet.functional.image_batch.
        optimizer: also take its step (see run_images)."""
        self._check_arrays()
        labels = np.asarray(labels)
        batch = len(labels)
        lab = lane_labels(labels, batch, x.shape[0], LANES, self._step.classes)
        return self._with_update(optimizer, lambda update: self._step.run(x, lab, 1.0 / batch, update)) / batch

    def run_images(self, images: np.ndarray, indices, labels, optimizer=None) -> float:
        """The step on images[indices] of a uint8 data set (N, H, W) with their labels (len(indices),): each block's
        thread gathers and scales its own 16 images, in parallel, right before its forward pass.

        optimizer: also take its step. When it trains exactly this model's trainable parameters (fusable), each
        range of gradients goes through its update as soon as it is final, on the thread that computed it, with
        results bit-identical to optimizer.step() afterwards; otherwise optimizer.step() runs afterwards."""
        self._check_arrays()
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        batch = len(indices)
        lab = lane_labels(labels, batch, -(-batch // LANES), LANES, self._step.classes)
        run = lambda update: self._step.run_images(images, indices, lab, 1.0 / batch, update)  # noqa: E731
        return self._with_update(optimizer, run) / batch

    def run_image_batches(self, images: np.ndarray, indices, labels, optimizer, lrs) -> np.ndarray:
        """Several steps in one engine call: indices (steps, batch) the rows of images in each step's batch, labels
        (steps, batch) theirs, lrs (steps,) each step's learning rate. The optimiser, which must be fusable, takes
        every step's update inside the engine (counted in optimizer.steps; its lr attribute is left as it was).
        The same computation as run_images on each batch with optimizer.lr = lrs[s], bit for bit, without a return
        to Python between steps. Returns each step's mean loss."""
        self._check_arrays()
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        if indices.ndim != 2:
            raise ValueError(f"indices must be (steps, batch), got shape {indices.shape}")
        steps, batch = indices.shape
        if not self.fusable(optimizer):
            raise ValueError("run_image_batches needs an optimiser whose update runs inside the step (fusable)")
        lab = lane_labels(labels, batch, -(-batch // LANES), LANES, self._step.classes)
        if lab.shape[0] != steps:
            raise ValueError(f"labels must have shape ({steps}, {batch}), got {np.shape(labels)}")
        lrs = np.ascontiguousarray(lrs, dtype=np.float32)
        losses = self._step.run_image_batches(images, indices, lab, 1.0 / batch, optimizer.next_update(), lrs)
        optimizer.step(applied=True, count=steps)
        return losses / batch

    def fusable(self, optimizer) -> bool:
        """Whether `optimizer`'s update can run inside this step: it has a fused form and trains exactly the
        captured model's trainable parameters, in its flat buffers."""
        if optimizer not in self._fusable:  # its buffers and these layers are fixed: checked once
            update = optimizer.next_update()
            ok = update is not None
            if ok:
                try:
                    self._step.check_update(update)
                except ValueError:
                    ok = False
            self._fusable[optimizer] = ok
        return self._fusable[optimizer]

    def _with_update(self, optimizer, run) -> float:
        update = optimizer.next_update() if optimizer is not None and self.fusable(optimizer) else None
        loss = run(update)
        if update is not None:
            optimizer.step(applied=True)  # only counts the step
        elif optimizer is not None:
            optimizer.step()
        return loss

    def _check_arrays(self) -> None:
        for p, (data, grad) in zip(self.params, self._arrays):
            if p.data is not data or (grad is not None and p.grad is not grad) or p.requires_grad != (grad is not None):
                raise RuntimeError("a parameter or gradient array was replaced, or a layer frozen or unfrozen, after "
                                   "capture; capture again")
