"""ONNX export of a trained fp32 model (``pip install "lenet[onnx]"`` for onnx and onnxruntime).

The exported graph computes what ``model(x)`` computes for an NCHW float32 batch ``x``: lenet's lanes layout is
internal to its kernels (a Conv2d weight is (out, in, kh, kw), a Linear weight (out, in), and Flatten orders the
features C, H, W, all as in ONNX), so the parameters go into the graph as they are.
"""
from __future__ import annotations

import os

import numpy as np

from . import graph, nn
from .fileio import write_atomic
from .functional import _pair

DEFAULT_OPSET = 13
MIN_OPSET = 11  # Gemm without a bias input


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError(
            'lenet.export_onnx needs the onnx package: pip install "lenet[onnx]" '
            "(installs onnx, and onnxruntime to run the exported file)") from e
    return onnx, helper, numpy_helper


def _window_out(size: int, kernel: int, stride: int, pad: int, what: str, name: str) -> int:
    out = (size + 2 * pad - kernel) // stride + 1
    if kernel < 1 or stride < 1 or pad < 0 or out < 1:
        raise ValueError(f"{name} ({what}): kernel {kernel}, stride {stride}, padding {pad} do not fit an input "
                         f"of size {size}")
    return out


class _Graph:
    """Nodes and initializers as the layers are added; `shape` is the per-sample shape of the current value."""

    def __init__(self, helper, numpy_helper, input_shape):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.value, self.shape = "images", tuple(input_shape)

    def param(self, name: str, tensor) -> str:
        array = np.ascontiguousarray(tensor.data, dtype=np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, name: str, inputs, shape, **attrs) -> None:
        out = f"{name}.{op.lower()}"
        self.nodes.append(self.helper.make_node(op, [self.value, *inputs], [out], name=f"{name}.{op}", **attrs))
        self.value, self.shape = out, tuple(shape)

    def image_shape(self, name: str, layer) -> tuple[int, int, int]:
        if len(self.shape) != 3:
            raise ValueError(f"{name} ({layer!r}) needs a (C, H, W) input per sample, gets {self.shape} "
                             "(a Flatten before it?)")
        return self.shape


def _add_layer(g: _Graph, name: str, layer) -> None:
    kind = type(layer)  # exact types: a subclass may compute something else
    if kind is nn.Conv2d:
        c, h, w = g.image_shape(name, layer)
        oc, ic, kh, kw = layer.weight.data.shape
        if ic != c:
            raise ValueError(f"{name} ({layer!r}) takes {ic} channels, gets {c}")
        (sh, sw), (ph, pw) = layer.stride, layer.padding
        oh = _window_out(h, kh, sh, ph, "height", name)
        ow = _window_out(w, kw, sw, pw, "width", name)
        inputs = [g.param(name + ".weight", layer.weight)]
        if layer.bias is not None:
            inputs.append(g.param(name + ".bias", layer.bias))
        g.add("Conv", name, inputs, (oc, oh, ow), kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw])
    elif kind is nn.MaxPool2d or kind is nn.AvgPool2d:
        c, h, w = g.image_shape(name, layer)
        kh, kw = _pair(layer.kernel_size, "kernel_size")
        sh, sw = (kh, kw) if layer.stride is None else _pair(layer.stride, "stride")
        shape = (c, _window_out(h, kh, sh, 0, "height", name), _window_out(w, kw, sw, 0, "width", name))
        # lenet pools without padding and drops a partial last window (floor, ceil_mode=0); its average divides
        # by kh*kw, which with no padding is also ONNX's (count_include_pad is then moot; set to 0 explicitly).
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[0, 0, 0, 0], ceil_mode=0)
        if kind is nn.AvgPool2d:
            g.add("AveragePool", name, [], shape, count_include_pad=0, **attrs)
        else:
            g.add("MaxPool", name, [], shape, **attrs)
    elif kind is nn.ReLU:
        g.add("Relu", name, [], g.shape)
    elif kind is nn.Tanh:
        g.add("Tanh", name, [], g.shape)
    elif kind is nn.Flatten:
        g.add("Flatten", name, [], (int(np.prod(g.shape)),), axis=1)
    elif kind is nn.Linear:
        out_features, in_features = layer.weight.data.shape
        if g.shape != (in_features,):
            raise ValueError(f"{name} ({layer!r}) takes {in_features} features per sample, gets shape {g.shape}"
                             + (" (a Flatten before it?)" if len(g.shape) != 1 else ""))
        inputs = [g.param(name + ".weight", layer.weight)]
        if layer.bias is not None:
            inputs.append(g.param(name + ".bias", layer.bias))
        g.add("Gemm", name, inputs, (out_features,), transB=1)  # y = x W^T + b, W as lenet stores it (out, in)
    else:
        raise TypeError(f"export_onnx cannot export layer {name}: {kind.__module__}.{kind.__qualname__} "
                        f"({layer!r}); supported: Conv2d, MaxPool2d, AvgPool2d, ReLU, Tanh, Flatten, Linear "
                        "(and nested Sequential)")


def export_onnx(model, path, *, input_shape=(1, 28, 28), opset: int = DEFAULT_OPSET):
    """Write `model` (a lenet.nn.Sequential of Conv2d, MaxPool2d, AvgPool2d, ReLU, Tanh, Flatten, Linear, e.g.
    LeNet5 or CoreMLNet, or a lenet.Model loaded from a file, whose input shape it then uses) to `path` as an ONNX
    model with its current fp32 weights.

    The graph takes "images", float32 (N, C, H, W) with `input_shape` = (C, H, W) and N dynamic (lenet's inputs
    are images scaled to [0, 1]), and gives "logits", (N, classes). The model is checked with onnx.checker
    (full check, with shape inference) before the file is written; the file is written atomically (a temporary
    file in the same folder, then os.replace). Returns the onnx.ModelProto.

    Raises ImportError (naming the extra) without onnx, TypeError for a layer it cannot export, ValueError for
    shapes that do not fit `input_shape` or an opset outside [11, the installed onnx's newest].
    """
    onnx, helper, numpy_helper = _import_onnx()
    from .model_file import Model
    if isinstance(model, Model):
        if type(model) is not Model:  # a QuantizedModel
            raise TypeError("export_onnx writes fp32 models: export the model before lenet.quantize")
        model, input_shape = model.module, model.input_shape
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                                        for d in input_shape):
        raise ValueError(f"input_shape must be (C, H, W), three positive ints, got {input_shape!r}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, (int, np.integer)) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {newest}] (this onnx's newest), got {opset!r}")

    g = _Graph(helper, numpy_helper, (int(d) for d in input_shape))
    for name, layer in graph.named_layers(model):
        _add_layer(g, name, layer)
    if not g.nodes:  # an empty Sequential returns its input
        g.add("Identity", "identity", [], g.shape)
    g.nodes[-1].output[0] = "logits"

    onnx_graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", *(int(d) for d in input_shape)])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", *g.shape])],
        initializer=g.initializers)
    onnx_graph.input[0].doc_string = "float32 images (N, C, H, W), scaled to [0, 1] as lenet trains on them"
    from . import __version__

    proto = helper.make_model(onnx_graph, producer_name="lenet", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", int(opset))])
    proto.ir_version = min(proto.ir_version, _ir_version(onnx, int(opset)))
    onnx.checker.check_model(proto, full_check=True)
    write_atomic(os.fspath(path), proto.SerializeToString())
    return proto


def _ir_version(onnx, opset: int) -> int:
    """The oldest IR version that carries `opset`, so that any runtime that knows the opset reads the file."""
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:  # an onnx without the table: keep make_model's own
        return onnx.IR_VERSION
