"""ONNX export: the file passes onnx.checker and ONNX Runtime computes what lenet computes (same predicted class on
all 10,000 MNIST test images, logits within 1e-4). Skipped without onnx and onnxruntime (pip install ".[onnx]")."""
import os
import sys

import numpy as np
import pytest

import lenet
from lenet import nn, optim
from lenet.onnx_export import export_onnx

LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def lenet_logits(model, x, batch_size=1000):
    with lenet.no_grad():
        return np.concatenate([model(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def compare(ort, model, path, x):
    """(lenet logits, ONNX Runtime logits) for the float32 batch x (N, C, H, W)."""
    got = session(ort, path).run(["logits"], {"images": x})[0]
    return lenet_logits(model, x), got


def trained(model_cls, mnist, n, optimizer):
    lenet.seed(0)
    model = model_cls()
    trainer = lenet.Trainer(model, optimizer(model.parameters()), batch_size=64, seed=0, log=None)
    trainer.fit(mnist.train_images[:n], mnist.train_labels[:n], epochs=1)
    return model


@pytest.fixture(scope="module")
def test_images(mnist):
    return lenet.data.to_float(mnist.test_images)


# ---- the file -----------------------------------------------------------------------------------------------------
def test_checker_passes_and_graph_has_the_promised_interface(onnx, tmp_path):
    model = lenet.LeNet5()
    path = tmp_path / "lenet5.onnx"
    returned = export_onnx(model, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto == returned
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = [d for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == dims[0].dim_param and out_dims[1].dim_value == 10
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # every parameter is an initializer under its state_dict name, with its values
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    state = model.state_dict()
    assert inits.keys() == state.keys()
    for name, value in state.items():
        np.testing.assert_array_equal(inits[name], value)
    assert [n.op_type for n in proto.graph.node] == [
        "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert os.listdir(tmp_path) == ["lenet5.onnx"]  # no temporary file left behind


@pytest.mark.parametrize("opset", [11, 17])
def test_other_opsets(onnx, ort, tmp_path, rng, opset):
    model = lenet.LeNet5()
    path = tmp_path / "m.onnx"
    proto = export_onnx(model, path, opset=opset)
    assert proto.opset_import[0].version == opset
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    want, got = compare(ort, model, path, x)
    assert np.abs(got - want).max() <= LOGIT_TOLERANCE


# ---- trained models on all of MNIST's test set --------------------------------------------------------------------
@pytest.mark.parametrize("model_cls, n, optimizer, min_accuracy", [
    (lenet.LeNet5, 60000, lambda p: optim.SGD(p, lr=0.05, momentum=0.9), 0.95),
    (lenet.CoreMLNet, 12000, lambda p: optim.Adam(p, lr=1e-3), 0.90),
], ids=["LeNet5", "CoreMLNet"])
def test_trained_model_matches_onnx_runtime_on_mnist_test_set(ort, mnist, test_images, tmp_path, model_cls, n,
                                                              optimizer, min_accuracy):
    model = trained(model_cls, mnist, n, optimizer)
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    want, got = compare(ort, model, path, test_images)
    assert got.shape == want.shape == (10000, 10)
    accuracy = float((want.argmax(1) == mnist.test_labels).mean())
    assert accuracy >= min_accuracy, f"the model did not train ({accuracy:.4f}): the comparison would mean little"
    diff = float(np.abs(got - want).max())
    disagree = int((got.argmax(1) != want.argmax(1)).sum())
    print(f"{model_cls.__name__}: accuracy {accuracy:.4f}, max |logit diff| {diff:.3g}, "
          f"{10000 - disagree}/10000 same class")
    assert disagree == 0, f"{disagree} of 10000 test images get another class from ONNX Runtime"
    assert diff <= LOGIT_TOLERANCE, f"max |logit diff| {diff:.3g} > {LOGIT_TOLERANCE}"
    # batch 1 through the dynamic batch dimension gives the same
    one = session(ort, path).run(["logits"], {"images": test_images[:1]})[0]
    assert np.abs(one - want[:1]).max() <= LOGIT_TOLERANCE


# ---- every layer type and option, random weights ------------------------------------------------------------------
VARIANTS = {
    "conv-stride-padding-tanh-avgpool": ((1, 28, 28), lambda: [
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * 7 * 7, 10)]),
    "asymmetric-kernel-stride-padding-no-bias": ((3, 13, 17), lambda: [
        nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(2, 0), bias=False), nn.ReLU(),
        nn.Conv2d(5, 6, 3, stride=(2, 1), padding=(0, 1)), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 7 * 8, 7, bias=False)]),
    "avgpool-odd-size-overlapping-stride": ((2, 11, 9), lambda: [
        nn.AvgPool2d(3, stride=2), nn.Conv2d(2, 3, 1), nn.AvgPool2d((2, 1), stride=(1, 2)),
        nn.Flatten(), nn.Linear(3 * 4 * 2, 4), nn.Tanh(), nn.Linear(4, 3)]),
    "maxpool-orders-and-overlap": ((1, 16, 16), lambda: [
        nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),           # fused, pool first
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(3, stride=1),            # fused, ReLU first, overlapping
        nn.Tanh(), nn.MaxPool2d(2, stride=(1, 2)),                           # plain
        nn.Flatten(), nn.Linear(4 * 3 * 2, 5)]),
    "nested-sequential-flatten-twice": ((1, 8, 8), lambda: [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten(),
        nn.Sequential(nn.Linear(72, 6), nn.Tanh()), nn.Flatten(), nn.Linear(6, 2)]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("batch", [5, 19])  # a block of one sample (lanes 1), and blocks of 16 with a partial one
def test_layer_variants_match(onnx, ort, tmp_path, isa, variant, batch):
    shape, layers = VARIANTS[variant]
    lenet.seed(7)
    model = nn.Sequential(*layers())
    rng = np.random.default_rng([sorted(VARIANTS).index(variant), batch])
    for p in model.parameters():  # larger than the default initialisation: activations far from 0
        p.data[...] = rng.uniform(-1.0, 1.0, p.data.shape)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_shape=shape)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = rng.random((batch, *shape), dtype=np.float32)
    want, got = compare(ort, model, path, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= LOGIT_TOLERANCE * max(1.0, np.abs(want).max())


def test_a_wrong_weight_is_detected(ort, tmp_path, rng):
    """The comparison can fail: the export of a model whose weights changed afterwards no longer matches it."""
    model = lenet.LeNet5()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    model.layers[-1].weight.data[3, 0] += 0.5
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    want, got = compare(ort, model, path, x)
    assert np.abs(got - want).max() > LOGIT_TOLERANCE


# ---- what it refuses ----------------------------------------------------------------------------------------------
class Dropout(nn.Module):
    def forward(self, x):
        return x


class LeakyReLU(nn.ReLU):  # a subclass computes something else: not exported as Relu
    def forward(self, x):
        return x


def test_a_loaded_model_file_exports(ort, tmp_path, rng):
    model = lenet.LeNet5()
    lenet.save(model, tmp_path / "m.lenet")
    loaded = lenet.load(tmp_path / "m.lenet")
    lenet.export_onnx(loaded, tmp_path / "m.onnx")
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"images": x})[0], loaded.logits(x), atol=1e-4)
    with pytest.raises(TypeError, match="before lenet.quantize"):
        lenet.export_onnx(lenet.quantize(loaded, rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), samples=50),
                          tmp_path / "q.onnx")


def test_unsupported_layer_raises_and_writes_nothing(onnx, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    for layer, name in [(Dropout(), "Dropout"), (LeakyReLU(), "LeakyReLU")]:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), layer, nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
        with pytest.raises(TypeError, match=rf"layers\.1.*{name}"):
            export_onnx(model, path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_refuses_what_is_not_a_plain_sequential(onnx, tmp_path):
    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="Sequential"):
        export_onnx(nn.Conv2d(1, 2, 3), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="Custom overrides"):
        export_onnx(Custom(nn.Flatten(), nn.Linear(784, 10)), tmp_path / "m.onnx")


def test_shapes_that_do_not_fit_raise(onnx, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=r"layers\.1.*Flatten before it"):
        export_onnx(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2 * 26 * 26, 10)), path)
    with pytest.raises(ValueError, match=r"layers\.0.*3 channels, gets 1"):
        export_onnx(nn.Sequential(nn.Conv2d(3, 2, 3)), path)
    with pytest.raises(ValueError, match=r"layers\.7.*400 features.*\(256,\)"):
        export_onnx(lenet.LeNet5(), path, input_shape=(1, 24, 24))
    with pytest.raises(ValueError, match="do not fit"):
        export_onnx(nn.Sequential(nn.MaxPool2d(4)), path, input_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(lenet.LeNet5(), path, input_shape=(28, 28))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(lenet.LeNet5(), path, opset=7)
    assert not path.exists()


def test_failed_write_leaves_the_old_file(onnx, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(lenet.LeNet5(), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "lenet\[onnx\]"'):
        lenet.export_onnx(lenet.LeNet5(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
