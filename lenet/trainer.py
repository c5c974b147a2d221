"""Trainer: fit a model on (images, labels) with per-epoch progress, and evaluate it."""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from . import functional as F
from .capture import LANES, CapturedStep, check_precision
from .data import to_float
from .nn import checked_int
from .tensor import no_grad


CHUNK_STEPS = 32  # steps per engine call on the captured path (the progress line is updated between calls)


class Trainer:
    """Minibatch training with a seeded shuffle: the same seed gives the same run (for any thread count).

    lr_schedule: None keeps the optimiser's learning rate; "cosine" decays it from its initial value to 0 over
    the steps of `fit` (lr_t = lr * (1 + cos(pi * t / T)) / 2), which lands on better final weights.
    captured: run each step's forward, loss and backward as one C++ call (lenet.capture; a Sequential model of
    the supported layers), the same computation without per-op Python.
    precision: "fp32", or "bf16" on the captured path: the dense layers' products and the later convolutions'
    gradients in bf16 with fp32 sums (see lenet.capture.CapturedStep; fast where the CPU has AMX or AVX512-BF16, opt-in because
    results differ from fp32's).
    `log` receives one line per epoch (default: print to stdout); pass None to stay quiet.
    """

    def __init__(self, model, optimizer, *, batch_size: int = 64, seed: int = 0, lr_schedule: str | None = None,
                 captured: bool = False, precision: str = "fp32", log=print):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if lr_schedule not in (None, "cosine"):
            raise ValueError(f"lr_schedule must be None or 'cosine', got {lr_schedule!r}")
        self.model, self.optimizer, self.batch_size = model, optimizer, batch_size
        self.lr_schedule, self.base_lr, self.total_steps = lr_schedule, optimizer.lr, None
        check_precision(precision)
        if precision != "fp32" and not captured:
            raise ValueError(f"precision {precision!r} needs the captured path (captured=True); the autograd path "
                             "is fp32")
        self.captured = CapturedStep(model, precision=precision) if captured else None
        self.rng = np.random.default_rng(checked_int(seed, "seed", 0))
        self.log = log or (lambda *a, **k: None)
        self.history: list[dict] = []

    def train_epoch(self, images, labels) -> dict:
        """One pass over the data in a fresh random order; returns the mean loss, seconds and samples/s."""
        images, labels = _check_data(images, labels)
        if any(not p.requires_grad for p in self.optimizer.params):
            raise RuntimeError("a parameter of the optimiser was frozen after it was made: make the optimiser "
                               "(and the Trainer) again from model.trainable_parameters()")
        n = len(images)
        total_loss, done, start = 0.0, 0, time.perf_counter()
        progress = _Progress(n) if sys.stderr.isatty() else None
        batches = self.epoch_batches(n)
        for first in range(0, len(batches), CHUNK_STEPS):
            part = batches[first : first + CHUNK_STEPS]
            for idx, loss in zip(part, self.run_batches(images, labels, part)):
                total_loss += loss * len(idx)
                done += len(idx)
            if progress:
                progress.update(done, total_loss / done)
        seconds = time.perf_counter() - start
        if progress:
            progress.clear()
        return {"loss": total_loss / n, "seconds": seconds, "samples_per_s": n / seconds}

    def epoch_batches(self, n: int) -> list:
        """One epoch's minibatches over n samples: index arrays of batch_size (the last may be shorter) in a fresh
        random order from the trainer's generator."""
        order = self.rng.permutation(n)
        return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def run_batches(self, images, labels, batches) -> list:
        """An optimiser step on each index array of `batches` in turn, as step() on each; returns their mean
        losses. On the captured path (uint8 images, an optimiser whose update runs inside the step), each run of
        equal-sized batches is one engine call (CapturedStep.run_image_batches), with the same results."""
        cap = self.captured
        if cap is None or images.dtype != np.uint8 or not cap.fusable(self.optimizer):
            return [self.step(images, labels, idx) for idx in batches]
        losses, first = [], 0
        while first < len(batches):
            end = first + 1
            while end < len(batches) and len(batches[end]) == len(batches[first]):
                end += 1
            idx = np.stack(batches[first:end])
            steps = self.optimizer.steps
            lrs = [self._lr_at(steps + s) for s in range(end - first)]
            losses.extend(cap.run_image_batches(images, idx, labels[idx], self.optimizer, lrs).tolist())
            self.optimizer.lr = lrs[-1]  # as step() would have left it
            first = end
        return losses

    def step(self, images, labels, idx) -> float:
        """One optimiser step on the samples images[idx] (images and labels as train_epoch checked them);
        returns the batch's mean loss."""
        self._schedule()
        if self.captured is not None and images.dtype == np.uint8:  # gather, forward, loss, backward, update: one call
            return self.captured.run_images(images, idx, labels[idx], self.optimizer)
        if self.captured is not None:  # forward, loss, backward and update in one call
            return self.captured(_batch(images, idx, LANES).data, labels[idx], self.optimizer)
        loss_t = F.cross_entropy(self.model(_batch(images, idx)), labels[idx])
        self.optimizer.zero_grad()
        loss_t.backward()
        self.optimizer.step()
        return float(loss_t.data)

    def plan_schedule(self, epochs: int, n_samples: int) -> None:
        """Spread the learning-rate schedule over `epochs` passes of `n_samples` (fit does this itself; call it
        before driving train_epoch directly)."""
        epochs = checked_int(epochs, "epochs", 0)
        self.total_steps = self.optimizer.steps + epochs * -(-n_samples // self.batch_size)

    def _lr_at(self, step: int) -> float:
        """The learning rate of optimiser step `step` (0-based) under the schedule."""
        if self.lr_schedule == "cosine" and self.total_steps:
            t = min(step, self.total_steps)
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        return self.optimizer.lr

    def _schedule(self) -> None:
        self.optimizer.lr = self._lr_at(self.optimizer.steps)

    def state_dict(self) -> dict:
        """What continuing this training exactly needs besides the model's weights: the shuffle generator's
        state, the schedule (base lr, total steps) and the optimiser's state (its steps, lr and buffers)."""
        return {"batch_size": self.batch_size, "lr_schedule": self.lr_schedule, "base_lr": self.base_lr,
                "total_steps": self.total_steps, "rng": self.rng.bit_generator.state,
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() (of a Trainer with the same batch size and schedule)."""
        for key in ("batch_size", "lr_schedule"):
            if state[key] != getattr(self, key):
                raise ValueError(f"trainer state has {key}={state[key]!r}, this trainer {getattr(self, key)!r}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lr, self.total_steps = float(state["base_lr"]), state["total_steps"]
        self.rng.bit_generator.state = state["rng"]

    def evaluate(self, images, labels, batch_size: int = 1000) -> dict:
        """Accuracy and mean loss over (images, labels), without recording a graph."""
        images, labels = _check_data(images, labels)
        correct, total_loss = 0, 0.0
        with no_grad():
            for i in range(0, len(images), batch_size):
                logits = self.model(_inputs(images[i : i + batch_size]))
                y = labels[i : i + batch_size]
                total_loss += float(F.cross_entropy(logits, y).data) * len(y)
                correct += int((logits.numpy().argmax(axis=1) == y).sum())
        return {"accuracy": correct / len(images), "loss": total_loss / len(images)}

    def fit(self, images, labels, epochs: int, *, test=None) -> list[dict]:
        """Train for `epochs` passes; after each, evaluate on `test` = (images, labels) when given."""
        self.plan_schedule(epochs, len(images))
        for epoch in range(1, int(epochs) + 1):
            record = {"epoch": epoch, **self.train_epoch(images, labels)}
            line = (f"epoch {epoch}/{epochs}  loss {record['loss']:.4f}  {record['seconds']:.2f} s  "
                    f"{record['samples_per_s']:,.0f} samples/s")
            if test is not None:
                ev = self.evaluate(*test)
                record.update(test_accuracy=ev["accuracy"], test_loss=ev["loss"])
                line += f"  test accuracy {ev['accuracy']:.4f}"
            self.history.append(record)
            self.log(line)
        return self.history


def _batch(images: np.ndarray, idx, lanes: int | None = None):
    """images[idx] as a lanes-layout Tensor: uint8 gathered, scaled and laid out in one C++ pass."""
    if images.dtype == np.uint8:
        return F.image_batch(images, idx, lanes)
    return F.to_lanes(_inputs(images[idx]), lanes)


def _inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images are scaled to [0, 1]; float images are taken as they are (with a channel axis added)."""
    if images.dtype == np.uint8:
        return to_float(images)
    return np.ascontiguousarray(images[:, None] if images.ndim == 3 else images, dtype=np.float32)


def _check_data(images, labels):
    images, labels = np.ascontiguousarray(images), np.asarray(labels)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, 28, 28) or (N, 1, 28, 28), got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if len(images) == 0:
        raise ValueError("no images")
    return images, labels


class _Progress:
    """A one-line progress display on a terminal (stderr), refreshed at most 4 times a second."""

    def __init__(self, total: int):
        self.total, self.last = total, 0.0

    def update(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last > 0.25:
            self.last = now
            sys.stderr.write(f"\r  {done:>7,}/{self.total:,}  loss {loss:.4f}")
            sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r" + " " * 40 + "\r")
        sys.stderr.flush()
