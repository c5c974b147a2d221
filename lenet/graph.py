"""A model's graph as data: the layers of a Sequential (kinds and hyper-parameters, no weights) in the JSON form
the engine plans from (see csrc/model/graph.h), and back.

`describe` is what a model file stores and what the captured training step and the inference path hand to the
engine; `build` makes the Sequential a model file describes. The parameters go with a graph in its order: each
Conv2d / Linear layer's weight, then its bias.
"""
from __future__ import annotations

import json

import numpy as np

from . import _core, nn
from .functional import _pair


def named_layers(model, prefix: str = ""):
    """(name, layer) for the layers of a Sequential in order, nested Sequentials unrolled; the names are the
    prefixes of their parameters' state_dict names ("layers.0", "layers.3.layers.1", ...)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected a lenet.nn.Sequential model (e.g. lenet.LeNet5), got {type(model).__name__}")
    if type(model).forward is not nn.Sequential.forward:
        raise TypeError(f"{type(model).__name__} overrides Sequential.forward: its graph is not its list of layers")
    for i, layer in enumerate(model.layers):
        name = f"{prefix}layers.{i}"
        if isinstance(layer, nn.Sequential):
            yield from named_layers(layer, name + ".")
        else:
            yield name, layer


def layers(model) -> list:
    """The layers of a Sequential in order, nested Sequentials unrolled."""
    return [layer for _, layer in named_layers(model)]


def _describe_layer(layer) -> dict:
    kind = type(layer)
    if kind is nn.Conv2d:
        oc, ic, kh, kw = layer.weight.data.shape
        return {"kind": "conv2d", "in_channels": ic, "out_channels": oc, "kernel": [kh, kw],
                "stride": list(layer.stride), "padding": list(layer.padding), "bias": layer.bias is not None}
    if kind is nn.Linear:
        out, inp = layer.weight.data.shape
        return {"kind": "linear", "in_features": inp, "out_features": out, "bias": layer.bias is not None}
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        kernel = _pair(layer.kernel_size, "kernel_size")
        stride = kernel if layer.stride is None else _pair(layer.stride, "stride")
        return {"kind": "maxpool" if kind is nn.MaxPool2d else "avgpool", "kernel": list(kernel),
                "stride": list(stride)}
    if kind in (nn.ReLU, nn.Tanh, nn.Flatten):
        return {"kind": kind.__name__.lower()}
    raise TypeError(f"layer {layer!r} ({kind.__name__}) has no graph form: supported are Conv2d, Linear, "
                    "MaxPool2d, AvgPool2d, ReLU, Tanh, Flatten")


def describe(model, input_shape=(1, 28, 28)) -> dict:
    """{"input": [C, H, W], "layers": [...]}, checked by the engine (a layer that does not fit its input raises
    ValueError naming it)."""
    graph = {"input": [int(d) for d in input_shape], "layers": [_describe_layer(m) for m in layers(model)]}
    analyse(graph)
    return graph


def analyse(graph: dict) -> tuple[list[tuple[int, ...]], int]:
    """(parameter shapes in order, number of classes); ValueError naming the first layer that does not fit."""
    shapes, classes = _core.analyse_graph(json.dumps(graph))
    return [tuple(s) for s in shapes], classes


def parameters(model) -> list:
    """The model's parameters (Tensors) in graph order."""
    out = []
    for layer in layers(model):
        if type(layer) in (nn.Conv2d, nn.Linear):
            out.append(layer.weight)
            if layer.bias is not None:
                out.append(layer.bias)
    return out


def build(graph: dict) -> nn.Sequential:
    """A Sequential with the layers `graph` describes (parameters freshly initialised, without touching the
    seeded generator of lenet.seed)."""
    analyse(graph)
    rng = np.random.default_rng(0)
    out = []
    for d in graph["layers"]:
        kind = d["kind"]
        if kind == "conv2d":
            out.append(nn.Conv2d(d["in_channels"], d["out_channels"], tuple(d["kernel"]), tuple(d["stride"]),
                                 tuple(d["padding"]), bias=d["bias"], rng=rng))
        elif kind == "linear":
            out.append(nn.Linear(d["in_features"], d["out_features"], bias=d["bias"], rng=rng))
        elif kind in ("maxpool", "avgpool"):
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            out.append(pool(tuple(d["kernel"]), tuple(d["stride"])))
        else:
            out.append({"relu": nn.ReLU, "tanh": nn.Tanh, "flatten": nn.Flatten}[kind]())
    return nn.Sequential(*out)
