"""lenet: train LeNet-style CNNs on the CPU they run on.

Hand-written C++ kernels (plain reference, AVX2+FMA, AVX-512; chosen at import by what the CPU supports) under a
thin Python layer: Tensor with autograd, layers, models, optimisers, a trainer and MNIST loading.
"""
from . import data, functional, nn, optim
from .backend import available_isas, get_num_threads, kernels, set_isa, set_num_threads, use_isa
from .model_file import Model, ModelFileError, load, save
from .models import CoreMLNet, LeNet5
from .nn import seed
from .onnx_export import export_onnx
from .quantize import QuantizedModel, quantize
from .tensor import Tensor, no_grad
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Tensor", "no_grad", "nn", "functional", "optim", "data", "LeNet5", "CoreMLNet", "Trainer", "kernels",
    "available_isas", "set_isa", "use_isa", "set_num_threads", "get_num_threads", "seed", "export_onnx",
    "Model", "ModelFileError", "load", "save", "quantize", "QuantizedModel",
]
