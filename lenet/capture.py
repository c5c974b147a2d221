"""A captured training step: a Sequential model's forward, loss and backward recorded once and run in C++.

The Python layers stay the one definition of the graph: `CapturedStep` reads them (kinds, hyper-parameters and
the parameter and gradient arrays) and hands the list to the engine, which then runs each block of 16 samples
through every layer and back on one thread while its activations stay in cache, instead of one Python call and
one thread-pool wake-up per op. It computes exactly what `cross_entropy(model(x), y).backward()` computes,
with the gradients written into each parameter's `.grad`.
"""
from __future__ import annotations

import numpy as np

from . import _core
from . import nn
from .functional import _pair, lane_labels
from .tensor import grad_buffer

LANES = 16


def _params(layer) -> dict:
    return {"weight": layer.weight.data, "grad_weight": grad_buffer(layer.weight),
            "bias": None if layer.bias is None else layer.bias.data,
            "grad_bias": None if layer.bias is None else grad_buffer(layer.bias)}


def _pool(pool, relu: bool) -> dict:
    kernel = _pair(pool.kernel_size, "kernel_size")
    return {"kind": "maxpool" if type(pool) is nn.MaxPool2d else "avgpool", "kernel": kernel, "relu": relu,
            "stride": kernel if pool.stride is None else _pair(pool.stride, "stride")}


def _describe(layers) -> list[dict]:
    """The layers as the engine takes them, with the same ReLU/max-pool fusion as Sequential's own plan."""
    out, i = [], 0
    while i < len(layers):
        layer, pool = layers[i], nn.fused_pool(layers, i)
        if pool is not None:
            out.append(_pool(pool, relu=True))
            i += 2
            continue
        if type(layer) is nn.Conv2d:
            out.append({"kind": "conv2d", "stride": layer.stride, "padding": layer.padding, **_params(layer)})
        elif type(layer) is nn.Linear:
            out.append({"kind": "linear", **_params(layer)})
        elif type(layer) in (nn.MaxPool2d, nn.AvgPool2d):
            out.append(_pool(layer, relu=False))
        elif type(layer) in (nn.ReLU, nn.Tanh, nn.Flatten):
            out.append({"kind": type(layer).__name__.lower()})
        else:
            raise TypeError(f"cannot capture layer {layer!r}: supported are Conv2d, Linear, MaxPool2d, AvgPool2d, "
                            "ReLU, Tanh, Flatten")
        i += 1
    return out


class CapturedStep:
    """`step(images_in_lanes, labels)` -> mean loss, with every parameter's .grad set to its gradient."""

    def __init__(self, model: nn.Sequential, input_shape=(1, 28, 28), classes: int = 10):
        if not isinstance(model, nn.Sequential):
            raise TypeError("only a Sequential model can be captured")
        self.params = model.parameters()
        self._arrays = [(p.data, grad_buffer(p)) for p in self.params]
        self._step = _core.TrainStep(_describe(model.layers), tuple(input_shape), classes)

    def __call__(self, x: np.ndarray, labels) -> float:
        """x: a batch in the lanes layout (nblk, C, H, W, 16), e.g. from lenet.functional.image_batch."""
        for p, (data, grad) in zip(self.params, self._arrays):
            if p.data is not data or p.grad is not grad:
                raise RuntimeError("a parameter or gradient array was replaced after capture; capture again")
        labels = np.asarray(labels)
        batch = len(labels)
        lab = lane_labels(labels, batch, x.shape[0], LANES)
        return self._step.run(x, lab, 1.0 / batch) / batch
