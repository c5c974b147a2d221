"""FLOPs of one training step, counted from a model's actual layers.

Convention (the one of the performance notes): a multiply-add is 2 FLOPs, and only the multiply-adds of the
convolutions and the fully connected layers are counted -- bias additions, ReLU, pooling, the softmax and
cross-entropy and the optimiser update are ignored (together well under 1 % of the total for both graphs).

Per sample and per layer with weights, with MACs the multiply-adds of its forward pass:

* Conv2d (OC, C, KH, KW) giving an OC x OH x OW output: MACs = OC * OH * OW * C * KH * KW
  (padding is counted as if it were data, as the kernels do);
* Linear (OUT, IN): MACs = OUT * IN;
* forward = 2 * MACs; backward = 2 * MACs for the weight gradient (dW) of every layer, plus 2 * MACs for the
  input gradient (dX) of every layer except the first one with weights: nothing upstream of it needs a
  gradient, and lenet does not compute it (conv2d_backward skips dX when the input does not require grad).

LeNet-5 (28 x 28 input): forward 833,040, backward 1,430,880, one training step 2,263,920 FLOPs per sample.
The MNIST-CoreML-Training graph: forward 2,731,024, step 7,803,696 FLOPs per sample.

Shapes are propagated analytically (no kernel runs), so counting works without touching the compiled module.
"""
from __future__ import annotations

import dataclasses
from typing import List, Tuple

from ..nn import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, Tanh

__all__ = ["LayerFlops", "ModelFlops", "count_flops"]

Shape = Tuple[int, ...]  # per sample: (C, H, W) or (features,)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """One layer: its shapes (per sample) and FLOPs per sample (0 for the layers that are not counted)."""

    index: int
    layer: str
    in_shape: Shape
    out_shape: Shape
    forward: int = 0
    backward_weight: int = 0  # dW
    backward_input: int = 0  # dX (0 for the first layer with weights)

    @property
    def backward(self) -> int:
        return self.backward_weight + self.backward_input

    @property
    def step(self) -> int:
        return self.forward + self.backward

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        d["backward"], d["step"] = self.backward, self.step
        return d


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    """FLOPs per sample of a model: forward, backward and one training step (= forward + backward)."""

    input_shape: Shape
    layers: Tuple[LayerFlops, ...]

    @property
    def forward(self) -> int:
        return sum(layer.forward for layer in self.layers)

    @property
    def backward(self) -> int:
        return sum(layer.backward for layer in self.layers)

    @property
    def step(self) -> int:
        return self.forward + self.backward

    def gflops(self, samples: int, seconds: float) -> float:
        """Achieved GFLOP/s of training steps over `samples` samples that took `seconds`."""
        return self.step * samples / seconds / 1e9

    def as_dict(self) -> dict:
        return {
            "convention": "multiply-add = 2 FLOPs; conv and linear only (bias, ReLU, pooling, loss and "
                          "optimiser not counted); backward = dW of every layer + dX of every layer but the "
                          "first with weights",
            "input_shape": list(self.input_shape),
            "forward_per_sample": self.forward,
            "backward_per_sample": self.backward,
            "step_per_sample": self.step,
            "layers": [layer.as_dict() for layer in self.layers if layer.forward],
        }


def _flat_layers(model: Module) -> List[Module]:
    if isinstance(model, Sequential):
        out: List[Module] = []
        for layer in model.layers:
            out.extend(_flat_layers(layer))
        return out
    return [model]


def _out_size(size: int, kernel: int, stride: int, padding: int, what: str) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"{what}: a {kernel}-wide window does not fit an input of size {size} (padding {padding})")
    return out


def count_flops(model: Module, input_shape: Shape = (1, 28, 28)) -> ModelFlops:
    """FLOPs per sample of `model` (a layer or a Sequential, nested or not) on inputs of `input_shape` (C, H, W).

    Raises TypeError for a layer with weights whose FLOPs it does not know how to count (and ValueError for
    shapes that do not fit); parameter-free layers it does not know are taken to be elementwise.
    """
    shape: Shape = tuple(int(s) for s in input_shape)
    rows: List[LayerFlops] = []
    seen_weights = False
    for i, layer in enumerate(_flat_layers(model)):
        name = repr(layer)
        fwd = dw = dx = 0
        if isinstance(layer, Conv2d):
            oc, ic, kh, kw = layer.weight.data.shape
            if len(shape) != 3 or shape[0] != ic:
                raise ValueError(f"layer {i} {name}: expects ({ic}, H, W) input, gets {shape}")
            (sh, sw), (ph, pw) = layer.stride, layer.padding
            oh = _out_size(shape[1], kh, sh, ph, f"layer {i} {name}")
            ow = _out_size(shape[2], kw, sw, pw, f"layer {i} {name}")
            out: Shape = (oc, oh, ow)
            macs = oc * oh * ow * ic * kh * kw
        elif isinstance(layer, Linear):
            n_out, n_in = layer.weight.data.shape
            if len(shape) != 1 or shape[0] != n_in:
                raise ValueError(f"layer {i} {name}: expects ({n_in},) input, gets {shape}")
            out = (n_out,)
            macs = n_out * n_in
        else:
            macs = 0
            if isinstance(layer, (MaxPool2d, AvgPool2d)):
                if len(shape) != 3:
                    raise ValueError(f"layer {i} {name}: expects (C, H, W) input, gets {shape}")
                kh, kw = _pair(layer.kernel_size)
                sh, sw = (kh, kw) if layer.stride is None else _pair(layer.stride)
                out = (shape[0], _out_size(shape[1], kh, sh, 0, f"layer {i} {name}"),
                       _out_size(shape[2], kw, sw, 0, f"layer {i} {name}"))
            elif isinstance(layer, Flatten):
                n = 1
                for s in shape:
                    n *= s
                out = (n,)
            elif isinstance(layer, (ReLU, Tanh)) or not layer.parameters():
                out = shape  # elementwise
            else:
                raise TypeError(f"count_flops: do not know the FLOPs of layer {i} {name} "
                                f"({type(layer).__name__} with parameters)")
        if macs:
            fwd = dw = 2 * macs
            dx = 2 * macs if seen_weights else 0  # the first layer with weights needs no input gradient
            seen_weights = True
        rows.append(LayerFlops(i, name, shape, out, fwd, dw, dx))
        shape = out
    return ModelFlops(tuple(int(s) for s in input_shape), tuple(rows))


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if not isinstance(v, (tuple, list)) else (int(v[0]), int(v[1]))
