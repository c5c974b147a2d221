"""Layers: thin classes over lenet.functional, and Module, their common base."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import functional as F
from .tensor import Tensor, zeros_on_lines

_rng = np.random.default_rng(0)


def checked_int(value, name: str, least: int) -> int:
    """value as an int, if it is one (a Python or numpy integer, not a bool) >= least; else a TypeError or a
    ValueError naming it."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {least}, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def seed(value: int) -> None:
    """Seed the generator that initialises new layers' parameters."""
    global _rng
    _rng = np.random.default_rng(checked_int(value, "seed", 0))


def _uniform(shape, bound: float, rng) -> Tensor:
    rng = _rng if rng is None else rng
    data = zeros_on_lines(shape)
    data[...] = rng.uniform(-bound, bound, size=shape)
    return Tensor(data, requires_grad=True)


class Module:
    """Base of layers and models: parameters are the Tensor attributes (and those of sub-modules), in order."""

    training = True

    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args):
        return self.forward(*args)

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Tensor) of every parameter, frozen ones included (see trainable_parameters)."""
        for name, value in vars(self).items():
            if name.startswith("_"):  # private state (e.g. Sequential's plan) holds no parameters of its own
                continue
            if isinstance(value, Tensor):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")
            elif isinstance(value, (list, tuple)):
                for i, m in enumerate(value):
                    if isinstance(m, Module):
                        yield from m.named_parameters(f"{prefix}{name}.{i}.")

    def parameters(self) -> list[Tensor]:
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self) -> list[Tensor]:
        """The parameters that are not frozen: what to give an optimiser after freezing layers."""
        return [p for p in self.parameters() if p.requires_grad]

    def requires_grad_(self, requires_grad: bool = True):
        """Freeze (False) or unfreeze (True) every parameter of this module and its sub-modules. A frozen
        parameter gets no gradient on the autograd path and an optimiser refuses it; the captured step still
        computes its gradient (unused). Returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def freeze(self):
        """requires_grad_(False): keep this module's parameters as they are while the rest trains."""
        return self.requires_grad_(False)

    def unfreeze(self):
        return self.requires_grad_(True)

    def zero_grad(self) -> None:
        for p in self.parameters():
            if p.grad is not None:
                p.grad[...] = 0

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter, by dotted name."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the parameters in place (their arrays keep their identity)."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.data.shape:
                raise ValueError(f"{name}: shape {value.shape} in state_dict, {p.data.shape} in the model")
            p.data[...] = value

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)


def _pair_at_least(v, name: str, least: int) -> tuple[int, int]:
    pair = F._pair(v, name)
    if min(pair) < least:
        raise ValueError(f"{name} must be at least {least}, got {v!r}")
    return pair


class Conv2d(Module):
    """in_channels -> out_channels with a kernel_size window; PyTorch's default initialisation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, rng=None):
        in_channels = checked_int(in_channels, "in_channels", 1)
        out_channels = checked_int(out_channels, "out_channels", 1)
        kh, kw = _pair_at_least(kernel_size, "kernel_size", 1)
        self.stride, self.padding = _pair_at_least(stride, "stride", 1), _pair_at_least(padding, "padding", 0)
        bound = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = _uniform((out_channels, in_channels, kh, kw), bound, rng)
        self.bias = _uniform((out_channels,), bound, rng) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def __repr__(self):
        oc, ic, kh, kw = self.weight.data.shape
        return f"Conv2d({ic}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding})"


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, rng=None):
        in_features = checked_int(in_features, "in_features", 1)
        out_features = checked_int(out_features, "out_features", 1)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound, rng)
        self.bias = _uniform((out_features,), bound, rng) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def __repr__(self):
        return f"Linear({self.weight.data.shape[1]}, {self.weight.data.shape[0]})"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None):
        _pair_at_least(kernel_size, "kernel_size", 1)
        if stride is not None:
            _pair_at_least(stride, "stride", 1)
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def __repr__(self):
        return f"MaxPool2d({self.kernel_size})"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride)

    def __repr__(self):
        return f"AvgPool2d({self.kernel_size})"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def __repr__(self):
        return "ReLU()"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)

    def __repr__(self):
        return "Tanh()"


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x)

    def __repr__(self):
        return "Flatten()"


class Sequential(Module):
    """Layers applied in order. Built once into a plan of calls in which a ReLU next to a MaxPool2d (either order)
    becomes one fused max-pool-ReLU kernel call, and a Linear followed by a ReLU one linear-ReLU call: the same
    values and gradients, one pass less over the activations and one op less in the graph. `self.layers` stays the
    one definition of the graph."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)
        self._plan = _fuse(self.layers)

    def forward(self, x):
        for step in self._plan:
            x = step(x)
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __setitem__(self, i, layer: Module):
        """Replace a layer (e.g. the last one, for other classes when fine-tuning); the plan is rebuilt. A
        captured step or optimiser made before holds the old layer's parameters: make them again."""
        if not isinstance(layer, Module):
            raise TypeError(f"a Sequential holds Modules, got {type(layer).__name__}")
        self.layers[i] = layer
        self._plan = _fuse(self.layers)

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"{type(self).__name__}(\n{inner}\n)"


def fused_pool(layers, i):
    """The MaxPool2d of layers[i:i+2] when that pair is a ReLU and a max-pool (either order), else None:
    such a pair runs as one fused kernel (max pooling and ReLU commute)."""
    pair = layers[i : i + 2]
    pool = next((m for m in pair if type(m) is MaxPool2d), None)
    return pool if len(pair) == 2 and pool is not None and any(type(m) is ReLU for m in pair) else None


def _fuse(layers):
    """The calls that run `layers`: [ReLU, MaxPool2d], [MaxPool2d, ReLU] and [Linear, ReLU] pairs become one fused
    call."""
    plan, i = [], 0
    while i < len(layers):
        pool = fused_pool(layers, i)
        if pool is not None:
            plan.append(lambda x, p=pool: F.max_pool2d(x, p.kernel_size, p.stride, relu=True))
            i += 2
        elif type(layers[i]) is Linear and i + 1 < len(layers) and type(layers[i + 1]) is ReLU:
            plan.append(lambda x, lin=layers[i]: F.linear(x, lin.weight, lin.bias, relu=True))
            i += 2
        else:
            plan.append(layers[i])
            i += 1
    return plan


class CrossEntropyLoss(Module):
    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)
