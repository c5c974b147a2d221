"""Post-training int8 quantisation: `lenet.quantize(model, calibration_images)` -> `QuantizedModel`, with the
predict / predict_proba / logits of `lenet.Model` run by int8 kernels, and `save` writing the same model-file
format (`lenet.load` returns a QuantizedModel for such a file).

The scheme (csrc/model/qnetwork.h runs it):
  * weights: int8, symmetric, one scale per output channel: s_w[m] = max|w[m]| / 127, q = round(w / s_w[m]);
  * biases: int32 at the scale of the sums, s_in * s_w[m];
  * activations: uint8 codes q = round(a / s) + z, one scale s and zero point z per tensor, from the range of that
    tensor over a sample of calibration images run through the fp32 model (min/max, or a percentile). The input is
    the pixels themselves (scale 1/255, zero point 0); a ReLU right after a conv2d / linear layer is fused into its
    requantisation; max pooling and ReLU work on the codes, average pooling takes their mean (rounded half up);
  * tanh: a table from input code to output code, whose quantisation is fixed (TANH_OUTPUT: scale 1/128, zero
    point 128, codes 0..255 for [-1, 127/128]), so it needs no calibration;
  * the last layer's output stays float: the logits.
Layers: conv2d, linear, maxpool, avgpool, relu, tanh, flatten: every kind a graph has.
"""
from __future__ import annotations

import json

import numpy as np

from . import _core, graph
from .model_file import Model, ModelFileError, _as_images
from .tensor import Tensor, no_grad

INPUT_SCALE = np.float32(1.0) / np.float32(255.0)  # pixels: the codes of the input are the uint8 pixel values
TANH_OUTPUT = {"scale": 1.0 / 128.0, "zero_point": 128}  # fixed by the scheme (csrc/model/qnetwork.h), not stored


class QuantizedModel(Model):
    """An int8 model ready for inference: `lenet.Model`'s predict / predict_proba / logits (the same input
    handling: one image or a batch, uint8 pixels or floats in [0, 1]; float input is rounded to the nearest pixel
    value), computed on int8 weights and uint8 activations. Made by `lenet.quantize` or `lenet.load`.

    graph: the fp32 graph; tensors: {"param.<i>": int8 weights / int32 biases, "param.<i>.scale": float32 weight
    scales}; metadata["quantization"]: the activation scales and zero points (see lenet.quantize).
    """

    def __init__(self, graph_: dict, tensors: dict, metadata: dict):
        self.module = None
        self.graph = graph_
        self.input_shape = tuple(int(d) for d in metadata.get("input_shape", graph_["input"]))
        _, n_classes = graph.analyse(graph_)
        self.classes = [str(c) for c in metadata.get("classes", range(n_classes))]
        self.metadata = dict(metadata)
        self.tensors = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
        # The engine checks every tensor against the graph and the scales (ModelFileError naming the problem).
        self._net = _core.QNetwork(json.dumps({"graph": self.graph, "metadata": self.metadata}),
                                   list(self.tensors.items()))

    def _file_tensors(self) -> list:
        return list(self.tensors.items())

    def __repr__(self):
        acc = self.metadata.get("accuracy")
        return (f"lenet.QuantizedModel({self.metadata.get('name', 'model')}, int8, input {self.input_shape}, "
                f"{len(self.classes)} classes" + (f", accuracy {acc:.4f}" if acc is not None else "") + ")")


def _calibration_range(values: np.ndarray, percentile: float | None) -> tuple[float, float]:
    """(lo, hi) of the values, widened to hold 0 (so that a real 0, e.g. padding, has an exact code)."""
    v = values.reshape(-1)
    if percentile is None:
        lo, hi = float(v.min()), float(v.max())
    else:
        lo, hi = (float(x) for x in np.percentile(v, [100.0 - percentile, percentile]))
    return min(lo, 0.0), max(hi, 0.0)


def _activation_qparams(lo: float, hi: float) -> tuple[np.float32, int]:
    scale = np.float32((hi - lo) / 255.0)
    if not scale > 0:  # a tensor that is 0 on every calibration image
        scale = np.float32(1.0)
    zero = int(np.clip(np.round(-lo / float(scale)), 0, 255))
    return scale, zero


def quantize(model, calibration_images, *, samples: int = 1000, percentile: float | None = None, seed: int = 0,
             input_shape=(1, 28, 28), classes=None) -> QuantizedModel:
    """Post-training int8 quantisation of a Sequential (or a lenet.Model) of conv2d / linear / maxpool / avgpool /
    relu / tanh / flatten layers.

    calibration_images: training images in any form `Model.predict` takes (uint8 pixels or floats in [0, 1]);
    `samples` of them, drawn at random with `seed` (all when fewer), set the activation ranges. percentile: None
    for min/max, or e.g. 99.99 to clip the activation ranges to that percentile.
    """
    if not isinstance(model, Model):
        model = Model(model, input_shape, classes)
    if isinstance(model, QuantizedModel):
        raise TypeError("the model is already quantized")
    if not (isinstance(samples, (int, np.integer)) and samples >= 1):
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if percentile is not None and not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
    g = model.graph

    x = model._net.flat_batch(_as_images(calibration_images))  # the input checks of predict: (N, C*H*W)
    if x.dtype != np.uint8 and not np.isfinite(x).all():
        raise ValueError("calibration images contain NaN or infinity")
    if len(x) > samples:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), samples, replace=False))]
    x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x

    # The fp32 activations: the output of each conv2d / linear layer after a ReLU that directly follows it.
    layers = graph.layers(model.module)
    kinds = [d["kind"] for d in g["layers"]]
    observed = {}
    with no_grad():
        t = Tensor(x.reshape((len(x),) + model.input_shape))
        for i, layer in enumerate(layers):
            t = layer(t)
            fused_relu = kinds[i] == "relu" and i > 0 and kinds[i - 1] in ("conv2d", "linear")
            if kinds[i] in ("conv2d", "linear") or fused_relu:
                observed[i - 1 if fused_relu else i] = t.numpy()

    compute = [i for i, k in enumerate(kinds) if k in ("conv2d", "linear")]
    params = graph.parameters(model.module)
    tensors, outputs = {}, []
    s_in, p = INPUT_SCALE, 0  # s_in: the scale of the codes reaching layer i
    for n, i in enumerate(compute):
        if "tanh" in kinds[compute[n - 1] if n else 0 : i]:
            s_in = np.float32(TANH_OUTPUT["scale"])
        w = params[p].data.astype(np.float64)
        oc = w.shape[0]
        s_w = (np.abs(w.reshape(oc, -1)).max(axis=1) / 127.0).astype(np.float32)
        s_w[~(s_w > 0)] = 1.0  # an all-zero channel
        shape = (oc,) + (1,) * (w.ndim - 1)
        tensors[f"param.{p}"] = np.clip(np.round(w / s_w.reshape(shape)), -127, 127).astype(np.int8)
        tensors[f"param.{p}.scale"] = s_w
        p += 1
        if g["layers"][i]["bias"]:
            b = params[p].data.astype(np.float64) / (np.float64(s_in) * s_w.astype(np.float64))
            tensors[f"param.{p}"] = np.clip(np.round(b), -2**31, 2**31 - 1).astype(np.int32)
            p += 1
        if n + 1 < len(compute):
            scale, zero = _activation_qparams(*_calibration_range(observed[i], percentile))
            outputs.append({"scale": float(scale), "zero_point": zero})
            s_in = scale

    meta = {**model.metadata, "name": model.metadata.get("name", type(model.module).__name__),
            "input_shape": list(model.input_shape), "classes": model.classes}
    meta.pop("accuracy", None)  # the fp32 accuracy does not describe the int8 model
    meta["quantization"] = {
        "scheme": "int8", "weights": "int8 symmetric per output channel",
        "activations": "uint8 per tensor (scale, zero point)",
        "calibration": {"samples": int(len(x)), "method": "minmax" if percentile is None else f"percentile {percentile}"},
        "input": {"scale": float(INPUT_SCALE), "zero_point": 0}, "outputs": outputs}
    return QuantizedModel(g, tensors, meta)


def load_quantized(header: dict, tensors: dict, path: str) -> QuantizedModel:
    """The QuantizedModel of a file's content (lenet.load calls this for a file with metadata.quantization)."""
    try:
        return QuantizedModel(header["graph"], tensors, header.get("metadata", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: {e}") from e
