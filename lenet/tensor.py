"""Tensor: a numpy array with reverse-mode autograd (micrograd's design over batched kernel ops).

Two layouts:
- plain: ``data`` has the logical shape (parameters, losses, anything small);
- lanes: a batch of ``batch`` samples stored as blocks of L samples with the samples innermost,
  ``data.shape == (nblk, C, H, W, L)`` or ``(nblk, F, L)``. This is the layout the C++ kernels work in; it is
  entered once at the input (`lenet.functional.to_lanes`) and left once at the output (`Tensor.numpy()`).
  The padding lanes of the last block hold zeros at the input and get zero gradient from the loss.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

LINE_FLOATS = 16  # float32 values per 64-byte cache line (csrc/core/aligned.h: kLineFloats)


def zeros_on_lines(shape) -> np.ndarray:
    """float32 zeros starting on a 64-byte cache line, for parameters and optimiser buffers. The kernels load whole
    lines of floats; numpy starts large arrays 16 bytes past a page, where each such load straddles two lines
    (LeNet-5's 400 -> 120 layer on one sample: 2.3 us against 1.3 us on lines)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.zeros(n + LINE_FLOATS, dtype=np.float32)
    start = (-raw.ctypes.data % 64) // 4  # float32 data starts on 4 bytes
    return raw[start : start + n].reshape(shape)


class _GradMode(threading.local):
    enabled = True  # per thread, as in PyTorch: no_grad() in one thread does not affect another


_grad_mode = _GradMode()


@contextlib.contextmanager
def no_grad():
    """Run ops without recording the graph (evaluation, inference), in this thread."""
    previous, _grad_mode.enabled = _grad_mode.enabled, False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "batch", "_parents", "_backward", "op")

    def __init__(self, data, requires_grad: bool = False, *, batch: int | None = None):
        if isinstance(data, Tensor):
            data = data.data
        arr = np.asarray(data)
        if arr.dtype != np.float32:
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"Tensor data must be numeric, got dtype {arr.dtype}")
            arr = arr.astype(np.float32)
        self.data = np.ascontiguousarray(arr)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.batch = batch
        self._parents: tuple[Tensor, ...] = ()
        self._backward = None
        self.op = ""

    # ---- layout ---------------------------------------------------------------------------------------------
    @property
    def lanes(self) -> int | None:
        """Samples per block in the lanes layout, None for a plain tensor."""
        return None if self.batch is None else self.data.shape[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical shape: (batch, C, H, W) or (batch, F) for a lanes tensor."""
        if self.batch is None:
            return self.data.shape
        return (self.batch,) + self.data.shape[1:-1]

    def numpy(self) -> np.ndarray:
        """The values in the logical layout, as a new array."""
        return _from_lanes(self.data, self.batch) if self.batch is not None else self.data.copy()

    def item(self) -> float:
        return float(self.data.reshape(-1)[0]) if self.data.size == 1 else _raise_item(self.data.shape)

    def __repr__(self) -> str:
        layout = f", lanes={self.lanes}" if self.batch is not None else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}{layout}{grad}{', op=' + self.op if self.op else ''})"

    # ---- autograd -------------------------------------------------------------------------------------------
    def backward(self, grad: np.ndarray | None = None) -> None:
        """Accumulate d(self)/d(leaf) into the .grad of every tensor of the graph that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no parameter in its graph?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar, got shape {self.shape}")
            grad = np.ones_like(self.data)
        elif np.shape(grad) != self.data.shape:
            raise ValueError(f"gradient shape {np.shape(grad)} does not match the tensor's {self.data.shape}")
        # The ops of the graph in topological order (iterative DFS: graphs can be deep). Leaves (parameters, inputs)
        # have no backward of their own: the ops above them accumulate into them, so they are not visited.
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in node._parents if p._backward is not None)
        accumulate(self, np.asarray(grad, dtype=np.float32))
        for node in reversed(order):
            if node._backward is not None and node.grad is not None:
                node._backward(node.grad)
                if node is not self:  # intermediates do not keep their gradient once passed on
                    node.grad = None

    def _init_lanes(self, data: np.ndarray, batch: int) -> "Tensor":
        """A constant in the lanes layout around an array the kernels produced (no copy, no checks)."""
        self.data, self.grad, self.requires_grad, self.batch = data, None, False, batch
        self._parents, self._backward, self.op = (), None, ""
        return self

    def detach(self) -> "Tensor":
        return Tensor(self.data, batch=self.batch)


def _raise_item(shape):
    raise ValueError(f"item() needs a tensor of one element, got shape {shape}")


def accumulate(t: Tensor, g: np.ndarray) -> None:
    """t.grad += g. A leaf accumulates in place into a buffer of its own (a parameter's gradient may be a view
    of the optimiser's flat buffer); an intermediate may take `g` itself, which is never written afterwards."""
    if not t.requires_grad:
        return
    if t._backward is None:
        grad_buffer(t)[...] += g
    elif t.grad is None:
        t.grad = g
    else:
        t.grad = t.grad + g


def grad_buffer(t: Tensor) -> np.ndarray:
    """t.grad, created as zeros when missing: kernels accumulate parameter gradients into it in place."""
    if t.grad is None:
        t.grad = np.zeros_like(t.data)
    return t.grad


def make_result(data: np.ndarray, parents: tuple, backward, op: str, batch: int | None = None) -> Tensor:
    """The output of an op; records the graph when grad is enabled and any parent requires grad."""
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out.batch, out.op = data, None, batch, op
    out.requires_grad = _grad_mode.enabled and any(p.requires_grad for p in parents)
    out._parents = parents if out.requires_grad else ()
    out._backward = backward if out.requires_grad else None
    return out


def _from_lanes(data: np.ndarray, batch: int) -> np.ndarray:
    nblk, lanes = data.shape[0], data.shape[-1]
    if lanes == 1:  # one sample per block: plain NCHW with a trailing axis
        return data.reshape(data.shape[:-1])[:batch].copy()
    return np.moveaxis(data, -1, 1).reshape((nblk * lanes,) + data.shape[1:-1])[:batch].copy()


def _to_lanes(arr: np.ndarray, lanes: int) -> np.ndarray:
    batch = arr.shape[0]
    if lanes == 1:
        return np.ascontiguousarray(arr, dtype=np.float32).reshape(arr.shape + (1,))
    nblk = -(-batch // lanes)
    padded = np.zeros((nblk * lanes,) + arr.shape[1:], dtype=np.float32)
    padded[:batch] = arr
    return np.ascontiguousarray(np.moveaxis(padded.reshape((nblk, lanes) + arr.shape[1:]), 1, -1))
