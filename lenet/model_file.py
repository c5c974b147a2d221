"""Model files and the inference API: `lenet.save(model, path)`, `lenet.load(path)` -> `Model` with
`predict` / `predict_proba`.

One file holds the graph (lenet.graph), the parameters and metadata (format version, input shape, class names,
accuracy at save time, and whatever the caller adds), checksummed, and written atomically. The engine reads and
writes the format (csrc/model/model_file.h) for this module and for the C API alike; a truncated or corrupt file
raises `ModelFileError` (a ValueError) naming the problem.
"""
from __future__ import annotations

import datetime
import json
import os

import numpy as np

from . import _core, graph, nn

ModelFileError = _core.ModelFileError


def _version() -> str:
    from . import __version__
    return __version__


class Model:
    """A model ready for inference: a Sequential plus what its file says about it.

    predict / predict_proba / logits take one image, (H, W) for one-channel models or (C, H, W), or a batch of N,
    (N, H, W) for one-channel models or (N, C, H, W): uint8 pixels (0-255, scaled by 1/255) or floats in [0, 1]. The whole forward pass is
    one engine call; the parameters are read live, so training `module` further is seen by the next call.
    """

    def __init__(self, module: nn.Sequential, input_shape=(1, 28, 28), classes=None, metadata=None):
        self.module = module
        self.input_shape = tuple(int(d) for d in input_shape)
        self.graph = graph.describe(module, self.input_shape)
        _, n_classes = graph.analyse(self.graph)
        self.classes = [str(c) for c in (classes if classes is not None else range(n_classes))]
        if len(self.classes) != n_classes:
            raise ValueError(f"{len(self.classes)} class names for a model with {n_classes} outputs")
        self.metadata = dict(metadata or {})
        # The engine checks the input shape and reads the parameters live (re-planning if an array was replaced).
        self._net = _core.Network(json.dumps(self.graph), graph.parameters(module))

    # ---- inference
    def logits(self, images) -> np.ndarray:
        """The raw scores: (classes,) for one image, (N, classes) for a batch."""
        x = images if type(images) is np.ndarray and images.dtype.char in "fB" else _as_images(images)
        return self._net.logits(x)  # one call: shape checks, NaN check and the forward pass

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (softmax of the logits): (classes,) for one image, (N, classes) for a batch."""
        z = self.logits(images)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def predict(self, images):
        """The predicted class index: an int for one image, an int64 array (N,) for a batch."""
        out = self.logits(images).argmax(axis=-1)
        return int(out) if np.ndim(out) == 0 else out

    # ---- files
    def save(self, path, *, accuracy: float | None = None, extra_tensors=None, **metadata) -> None:
        """Write the model file (atomically). accuracy: the test accuracy at save time, kept in the metadata."""
        meta = {**self.metadata, **metadata}
        meta.update(format_version=1, lenet_version=_version(), name=meta.get("name", type(self.module).__name__),
                    input_shape=list(self.input_shape), classes=self.classes,
                    saved=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        if accuracy is not None:
            meta["accuracy"] = float(accuracy)
        tensors = self._file_tensors()
        for name, value in (extra_tensors or {}).items():
            tensors.append((name, np.ascontiguousarray(value)))
        header = json.dumps({"graph": self.graph, "metadata": meta})
        _core.write_model_file(os.fspath(path), header, tensors)
        self.metadata = meta

    def _file_tensors(self) -> list:
        """(name, array) of every parameter, as the file stores them."""
        return [(f"param.{i}", np.ascontiguousarray(p.data)) for i, p in enumerate(graph.parameters(self.module))]

    def __repr__(self):
        acc = self.metadata.get("accuracy")
        return (f"lenet.Model({self.metadata.get('name', type(self.module).__name__)}, input {self.input_shape}, "
                f"{len(self.classes)} classes" + (f", accuracy {acc:.4f}" if acc is not None else "") + ")")


def _as_images(images) -> np.ndarray:
    """images as a uint8 or float32 array (what the engine takes); other numeric types become float32."""
    x = np.asarray(images)
    if x.dtype != np.uint8 and x.dtype != np.float32:
        if not (np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
            raise TypeError(f"images must be uint8 pixels (0-255) or floats in [0, 1], got dtype {x.dtype}")
        x = x.astype(np.float32)
    return x


def save(model, path, *, input_shape=(1, 28, 28), classes=None, accuracy: float | None = None, extra_tensors=None,
         **metadata) -> Model:
    """Save a Sequential (or a Model) with its graph and metadata to `path`; returns the Model."""
    if not isinstance(model, Model):
        model = Model(model, input_shape, classes)
    model.save(path, accuracy=accuracy, extra_tensors=extra_tensors, **metadata)
    return model


def read(path) -> tuple[dict, dict]:
    """The raw content of a model file: (header, {tensor name: array}). Raises ModelFileError."""
    if os.path.isdir(path):  # (the engine's stream would open it, then fail on its first read)
        raise ModelFileError(f"{os.fspath(path)}: is a directory, not a model file")
    text, tensors = _core.read_model_file(os.fspath(path))
    return json.loads(text), dict(tensors)


def load(path) -> Model:
    """The Model saved in `path`. Raises ModelFileError (a ValueError) naming what is wrong with the file."""
    header, tensors = read(path)
    meta = header.get("metadata", {})
    if "quantization" in meta:  # an int8 file (lenet.quantize)
        from .quantize import load_quantized
        return load_quantized(header, tensors, os.fspath(path))
    try:
        module = graph.build(header["graph"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{os.fspath(path)}: the graph cannot be built: {e}") from e
    params = graph.parameters(module)
    for i, p in enumerate(params):
        value = tensors.get(f"param.{i}")
        if value is None or value.shape != p.data.shape or value.dtype != np.float32:
            got = "missing" if value is None else f"{value.dtype} {value.shape}"
            raise ModelFileError(f"{os.fspath(path)}: parameter {i} should be float32 {p.data.shape}, is {got}")
        p.data[...] = value
    return Model(module, meta.get("input_shape", header["graph"]["input"]), meta.get("classes"), meta)
