"""The differentiable ops: each computes its result with one kernel call and attaches its backward.

Batched ops work in the lanes layout (see lenet.tensor); a plain (batch, ...) input is moved into it first.
"""
from __future__ import annotations

import numpy as np

from . import _core
from .tensor import Tensor, _from_lanes, _to_lanes, accumulate, grad_buffer, make_result

DEFAULT_LANES = 16


def default_lanes(batch: int) -> int:
    """16 samples per block (one AVX-512 register); tiny batches use 1 (plain NCHW) instead of padding to 16."""
    return DEFAULT_LANES if batch >= 8 else 1


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _pair(v, name: str) -> tuple[int, int]:
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:  # the layers' own, pre-checked
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, (int, np.integer)) for i in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


# ---- layout ---------------------------------------------------------------------------------------------------
def to_lanes(x, lanes: int | None = None) -> Tensor:
    """(batch, ...) -> lanes layout (nblk, ..., L). A tensor already in lanes layout is returned as is."""
    x = as_tensor(x)
    if x.batch is not None:
        return x
    if x.data.ndim < 2:
        raise ValueError(f"a batch needs at least 2 dimensions (batch, features...), got shape {x.shape}")
    batch = x.data.shape[0]
    if batch < 1:
        raise ValueError("empty batch")
    lanes = default_lanes(batch) if lanes is None else lanes
    if not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive int, got {lanes!r}")

    def backward(g):
        accumulate(x, _from_lanes(g, batch))

    return make_result(_to_lanes(x.data, lanes), (x,), backward, "to_lanes", batch=batch)


def image_batch(images: np.ndarray, indices, lanes: int | None = None) -> Tensor:
    """uint8 images[indices] scaled to [0, 1], straight into the lanes layout (the input of a training step)."""
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    lanes = default_lanes(len(indices)) if lanes is None else lanes
    return Tensor.__new__(Tensor)._init_lanes(_core.pack_images(images, indices, lanes), len(indices))


def from_lanes(x: Tensor) -> Tensor:
    """lanes layout -> plain (batch, ...)."""
    if x.batch is None:
        return x
    lanes = x.lanes

    def backward(g):
        accumulate(x, _to_lanes(g, lanes))

    return make_result(_from_lanes(x.data, x.batch), (x,), backward, "from_lanes")


def _lanes_input(x, ndim: int, op: str) -> Tensor:
    x = to_lanes(x)
    if x.data.ndim != ndim:
        want = "(batch, C, H, W)" if ndim == 5 else "(batch, features)"
        raise ValueError(f"{op} expects a {want} input, got shape {x.shape}")
    return x


def flatten(x) -> Tensor:
    """(batch, C, H, W) -> (batch, C*H*W); in the lanes layout this is a reshape, no data moves."""
    x = as_tensor(x)
    if x.batch is None:
        shape = x.data.shape
        return make_result(x.data.reshape(shape[0], -1), (x,), lambda g: accumulate(x, g.reshape(shape)), "flatten")
    shape = x.data.shape
    data = x.data.reshape(shape[0], -1, shape[-1])
    return make_result(data, (x,), lambda g: accumulate(x, g.reshape(shape)), "flatten", batch=x.batch)


def _param_grads(weight: Tensor, bias: Tensor | None):
    """Where a layer's kernel accumulates its weight and bias gradients: the parameters' own .grad buffers
    (scratch zeros for a parameter that does not require grad; None when there is no bias)."""
    dw = grad_buffer(weight) if weight.requires_grad else np.zeros_like(weight.data)
    db = None if bias is None else (grad_buffer(bias) if bias.requires_grad else np.zeros_like(bias.data))
    return dw, db


# ---- convolution and pooling -------------------------------------------------------------------------------------
def conv2d(x, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, algo: str = "auto") -> Tensor:
    """x (batch, C, H, W), weight (OC, C, KH, KW), bias (OC,) -> (batch, OC, OH, OW)."""
    x = _lanes_input(x, 5, "conv2d")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    b = None if bias is None else bias.data
    y = _core.conv2d_forward(x.data, weight.data, b, stride, padding, algo)

    def backward(g):
        dw, db = _param_grads(weight, bias)
        dx = _core.conv2d_backward(x.data, weight.data, g, dw, db, stride, padding, x.requires_grad)
        if dx is not None:
            accumulate(x, dx)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return make_result(y, parents, backward, "conv2d", batch=x.batch)


def _pool(kind: str, x, kernel_size, stride, relu: bool = False) -> Tensor:
    x = _lanes_input(x, 5, f"{kind}_pool2d")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    y = _core.pool2d_forward(kind, x.data, kernel, stride, relu)

    def backward(g):
        accumulate(x, _core.pool2d_backward(kind, x.data, y, g, kernel, stride, relu))

    return make_result(y, (x,), backward, f"{kind}_pool2d" + ("_relu" if relu else ""), batch=x.batch)


def max_pool2d(x, kernel_size, stride=None, relu: bool = False) -> Tensor:
    """Max over kernel_size windows (stride defaults to the window); the gradient goes to the first maximum.
    relu=True fuses a ReLU into the same kernel (max pooling and ReLU commute, in either order)."""
    return _pool("max", x, kernel_size, stride, relu)


def avg_pool2d(x, kernel_size, stride=None) -> Tensor:
    return _pool("avg", x, kernel_size, stride)


# ---- dense --------------------------------------------------------------------------------------------------------
def linear(x, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """x (batch, in), weight (out, in), bias (out,) -> (batch, out). relu=True fuses a following ReLU into the
    same kernel calls (one op in the graph instead of two; the same values and gradients)."""
    x = _lanes_input(x, 3, "linear")
    b = None if bias is None else bias.data
    y = _core.linear_forward(x.data, weight.data, b, relu)

    def backward(g):
        dw, db = _param_grads(weight, bias)
        dx = _core.linear_backward(x.data, weight.data, g, dw, db, x.requires_grad, y if relu else None)
        if dx is not None:
            accumulate(x, dx)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return make_result(y, parents, backward, "linear_relu" if relu else "linear", batch=x.batch)


# ---- activations --------------------------------------------------------------------------------------------------
def _activation(kind: str, x) -> Tensor:
    x = as_tensor(x)
    y = _core.activation_forward(kind, x.data)

    def backward(g):
        accumulate(x, _core.activation_backward(kind, y, g))

    return make_result(y, (x,), backward, kind, batch=x.batch)


def relu(x) -> Tensor:
    return _activation("relu", x)


def tanh(x) -> Tensor:
    return _activation("tanh", x)


# ---- loss ---------------------------------------------------------------------------------------------------------
def lane_labels(labels, batch: int, nblk: int, lanes: int, classes: int) -> np.ndarray:
    """Labels (batch,), each in [0, classes), as int32 per lane, -1 on the padding lanes of the last block.
    Labels (steps, batch) of several batches give (steps, nblk * lanes)."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[-1] != batch:
        raise ValueError(f"labels must have shape ({batch},) to match the batch, got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo < 0 or hi >= classes:  # checked before the cast to int32, which would wrap large values
        raise ValueError(f"labels must be in [0, {classes}), got range [{lo}, {hi}]")
    out = np.full(labels.shape[:-1] + (nblk * lanes,), -1, dtype=np.int32)
    out[..., :batch] = labels
    return out


def cross_entropy(logits, labels) -> Tensor:
    """Mean softmax cross-entropy of logits (batch, classes) against integer labels (batch,)."""
    logits = _lanes_input(logits, 3, "cross_entropy")
    nblk, classes, lanes = logits.data.shape
    lab = lane_labels(labels, logits.batch, nblk, lanes, classes)
    loss, dlogits = _core.softmax_xent(logits.data, lab, 1.0 / logits.batch)
    value = np.array(loss.sum(dtype=np.float64) / logits.batch, dtype=np.float32)

    def backward(g):
        accumulate(logits, dlogits if g == 1.0 else dlogits * g)

    return make_result(value, (logits,), backward, "cross_entropy")
