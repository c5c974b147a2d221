"""Models that more than one test module trains."""
from lenet import nn


def dead_rows_model():
    """Dense layers with rows that add nothing (block::gemm_nn_live_rows, dense_dw_rows): the first convolution's
    channels 0 and 2 never pass their ReLU (so a quarter of fc1's input features are 0 for every sample), and fc1's
    units 0-9 neither (so their rows of dW are 0 and the input gradient skips them)."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 40),
                          nn.ReLU(), nn.Linear(40, 10))
    model[0].bias.data[[0, 2]] = -1e3
    model[4].bias.data[:10] = -1e3
    return model


def zero_features_model():
    """A dense layer whose input features are 0 for every sample but whose input gradient is not: the first
    convolution's channels 0 and 2 have no weights and no bias, and no ReLU follows them (block::dense_dx computes
    every row here; only a ReLU below may zero them)."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 40), nn.ReLU(),
                          nn.Linear(40, 10))
    for c in (0, 2):
        model[0].weight.data[c] = 0.0
        model[0].bias.data[c] = 0.0
    return model
