"""The two graphs lenet trains: classic LeNet-5 and the graph of the MNIST-CoreML-Training project."""
from __future__ import annotations

from .nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential


class LeNet5(Sequential):
    """LeNet-5 on 28x28 input: conv 5x5 1->6 (pad 2), ReLU, maxpool 2, conv 5x5 6->16, ReLU, maxpool 2,
    fc 400->120, ReLU, fc 120->84, ReLU, fc 84->10 (61,706 parameters)."""

    def __init__(self, num_classes: int = 10, rng=None):
        super().__init__(
            Conv2d(1, 6, 5, padding=2, rng=rng), ReLU(), MaxPool2d(2),     # 6 x 28 x 28 -> 6 x 14 x 14
            Conv2d(6, 16, 5, rng=rng), ReLU(), MaxPool2d(2),               # 16 x 10 x 10 -> 16 x 5 x 5
            Flatten(),
            Linear(400, 120, rng=rng), ReLU(),
            Linear(120, 84, rng=rng), ReLU(),
            Linear(84, num_classes, rng=rng),
        )


class CoreMLNet(Sequential):
    """The MNIST-CoreML-Training graph: conv 32 3x3 valid, ReLU, maxpool 2, conv 32 2x2 valid, ReLU, maxpool 2,
    fc 1152->500, ReLU, fc 500->10 (585,958 parameters; trained there with batch 128 and Adam 1e-3)."""

    def __init__(self, num_classes: int = 10, rng=None):
        super().__init__(
            Conv2d(1, 32, 3, rng=rng), ReLU(), MaxPool2d(2),               # 32 x 26 x 26 -> 32 x 13 x 13
            Conv2d(32, 32, 2, rng=rng), ReLU(), MaxPool2d(2),              # 32 x 12 x 12 -> 32 x 6 x 6
            Flatten(),
            Linear(1152, 500, rng=rng), ReLU(),
            Linear(500, num_classes, rng=rng),
        )


MODELS = {"lenet5": LeNet5, "coreml": CoreMLNet}
