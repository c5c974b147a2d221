"""Optimisers. All parameters live in one flat buffer (and their gradients in another), so a step is one kernel
call over every parameter at once. Each parameter starts on a cache line of the buffers (the zero padding between
them stays zero). An optimiser describes its next update once (next_update()); the same description drives its own
step() and the captured training step, which applies it while computing the gradients."""
from __future__ import annotations

import math

from . import _core
from .tensor import LINE_FLOATS, Tensor, zeros_on_lines


def _hyper(name: str, value, ok, expected: str) -> float:
    """value as a float, if it is a finite number for which ok(value) holds; else a ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _below_one(v: float) -> bool:
    return 0 <= v < 1


class Optimizer:
    def __init__(self, params, lr: float):
        params = list(params)
        if not params:
            raise ValueError("the optimiser got no parameters")
        if any(not isinstance(p, Tensor) for p in params):
            raise TypeError("parameters must be lenet Tensors")
        if any(not p.requires_grad for p in params):
            raise ValueError("some parameters are frozen (requires_grad=False); give the optimiser "
                             "model.trainable_parameters()")
        unique = list({id(p): p for p in params}.values())
        self.lr = _hyper("learning rate", lr, _positive, "positive and finite")
        self.params = unique
        offsets, n = [], 0
        for p in unique:
            offsets.append(n)
            n += -(-p.data.size // LINE_FLOATS) * LINE_FLOATS  # the next one starts on a line
        self.flat = zeros_on_lines(n)
        self.flat_grad = zeros_on_lines(n)
        for p, offset in zip(unique, offsets):  # re-home every parameter (and its gradient) as a view of the buffers
            size = p.data.size
            view = self.flat[offset : offset + size].reshape(p.data.shape)
            view[...] = p.data
            p.data = view
            grad = self.flat_grad[offset : offset + size].reshape(p.data.shape)
            if p.grad is not None:
                grad[...] = p.grad
            p.grad = grad
        self.steps = 0

    def zero_grad(self) -> None:
        self.flat_grad.fill(0.0)

    def step(self, applied: bool = False, count: int = 1) -> None:
        """Update every parameter from its gradient. applied: a captured training step already applied this
        update (lenet.capture.CapturedStep with optimizer=); only count it, or `count` such updates."""
        if count != 1 and not applied:
            raise ValueError("only applied updates can be counted several at a time")
        update = None if applied else self.next_update()
        self.steps += count
        if applied:
            return
        if update is not None:
            _core.apply_update(update)
        else:
            self._update()

    def next_update(self) -> dict | None:
        """The next step's update (the rule, its hyper-parameters and the flat buffers), as step() and the
        captured training step apply it; None for an optimiser with no such form, whose _update() then does
        the step (after steps was counted)."""
        return None

    def _update(self) -> None:
        raise NotImplementedError("an optimiser gives next_update() or implements _update()")

    def state_dict(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, **{k: v.copy() for k, v in self._buffers().items()}}

    def load_state_dict(self, state: dict) -> None:
        steps = int(state["steps"])
        if steps < 0:
            raise ValueError(f"optimiser state steps: must be >= 0, got {steps}")
        self.steps, self.lr = steps, _hyper("learning rate", state["lr"], _positive, "positive and finite")
        for k, v in self._buffers().items():
            if state[k].shape != v.shape:
                raise ValueError(f"optimiser state {k}: shape {state[k].shape}, expected {v.shape}")
            v[...] = state[k]

    def _buffers(self) -> dict:
        return {}


class SGD(Optimizer):
    """SGD with momentum and L2 weight decay (PyTorch's formulation; nesterov optional)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _hyper("momentum", momentum, _below_one, "in [0, 1)")
        self.weight_decay = _hyper("weight_decay", weight_decay, _non_negative, ">= 0 and finite")
        self.nesterov = bool(nesterov)
        self.velocity = zeros_on_lines(self.flat.size)

    def next_update(self) -> dict:
        return {"kind": "sgd", "params": self.flat, "grads": self.flat_grad, "state": [self.velocity], "lr": self.lr,
                "momentum": self.momentum, "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def _buffers(self):
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay (PyTorch's formulation)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = tuple(_hyper(f"betas[{i}]", b, _below_one, "in [0, 1)") for i, b in enumerate(betas))
        # eps > 0: with 0, a weight whose gradient has always been 0 would become 0 / 0 (NaN)
        self.eps = _hyper("eps", eps, _positive, "positive and finite")
        self.weight_decay = _hyper("weight_decay", weight_decay, _non_negative, ">= 0 and finite")
        self.exp_avg = zeros_on_lines(self.flat.size)
        self.exp_avg_sq = zeros_on_lines(self.flat.size)

    def next_update(self) -> dict:
        return {"kind": "adam", "params": self.flat, "grads": self.flat_grad, "state": [self.exp_avg, self.exp_avg_sq],
                "lr": self.lr, "b1": self.betas[0], "b2": self.betas[1], "eps": self.eps,
                "weight_decay": self.weight_decay, "step": self.steps + 1}

    def _buffers(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}
