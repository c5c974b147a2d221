"""Fine-tuning: freeze layers of a model trained on MNIST, train the rest (with a new last layer) on Fashion-MNIST.
Needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) for the training tests."""
import numpy as np
import pytest

import lenet
from lenet import nn, optim, train

FASHION_LIMIT = 10000
# LeNet-5 after one epoch of MNIST, its convolutions frozen, the dense layers (a new last one) trained for one epoch
# on the first 10,000 Fashion-MNIST images (SGD 0.05 momentum 0.9, cosine): 0.736 test accuracy measured (0.726-0.736
# over head seeds); a broken freeze or a head that does not train stays near 0.1.
FASHION_THRESHOLD = 0.65


@pytest.fixture(scope="module")
def fashion():
    try:
        return lenet.data.load_fashion_mnist()
    except lenet.data.MNISTNotFound as exc:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc.reason}")


@pytest.fixture(scope="module")
def base_file(mnist, tmp_path_factory):
    """LeNet-5 trained for one epoch on MNIST, saved."""
    lenet.seed(0)
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), lr_schedule="cosine",
                            captured=True, log=None)
    trainer.fit(mnist.train_images, mnist.train_labels, epochs=1)
    path = tmp_path_factory.mktemp("base") / "mnist.lenet"
    lenet.save(model, path, accuracy=trainer.evaluate(mnist.test_images, mnist.test_labels)["accuracy"])
    return path


def conv_params(model):
    return [p for layer in model.layers[:6] for p in layer.parameters()]


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "autograd"])
def test_finetune_dense_layers_on_fashion(base_file, fashion, tmp_path, captured):
    model = lenet.load(base_file).module
    model[-1] = nn.Linear(84, 10, rng=np.random.default_rng(0))  # a new head for the new classes
    for layer in model.layers[:6]:  # conv, relu, pool, conv, relu, pool
        layer.freeze()
    frozen = [p.data.copy() for p in conv_params(model)]
    dense = [p.data.copy() for p in model.layers[7].parameters()]
    opt = optim.SGD(model.trainable_parameters(), lr=0.05, momentum=0.9)
    assert len(opt.params) == 6 and sum(p.data.size for p in opt.params) == 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    trainer = lenet.Trainer(model, opt, lr_schedule="cosine", captured=captured, log=None)
    trainer.fit(fashion.train_images[:FASHION_LIMIT], fashion.train_labels[:FASHION_LIMIT], epochs=1)
    for before, p in zip(frozen, conv_params(model)):
        assert np.array_equal(before, p.data)
    assert not np.array_equal(dense[0], model.layers[7].weight.data)
    acc = trainer.evaluate(fashion.test_images, fashion.test_labels)["accuracy"]
    assert acc >= FASHION_THRESHOLD, acc
    out = lenet.save(model, tmp_path / "fashion.lenet", classes=lenet.data.FASHION_CLASSES, accuracy=acc)
    again = lenet.load(tmp_path / "fashion.lenet")
    assert again.classes == list(lenet.data.FASHION_CLASSES)
    assert np.array_equal(again.predict(fashion.test_images[:100]), out.predict(fashion.test_images[:100]))


def test_finetune_cli(base_file, fashion, tmp_path, capsys):
    out = tmp_path / "fashion.lenet"
    argv = ["--finetune", base_file, "--freeze", "0-5", "--new-head", "--dataset", "fashion-mnist", "--epochs", 2,
            "--stop-after", 1, "--limit", FASHION_LIMIT, "--out", out]
    assert train.main(argv) == 0
    assert "trained (layers 0-5 frozen)" in capsys.readouterr().out
    assert train.main(["--out", out, "--resume"]) == 0  # the frozen layers stay frozen on resume
    base, tuned = lenet.load(base_file), lenet.load(out)
    for a, b in zip(conv_params(base.module), conv_params(tuned.module)):
        assert np.array_equal(a.data, b.data)
    assert tuned.classes[0] == "T-shirt/top" and tuned.metadata["accuracy"] >= FASHION_THRESHOLD
    assert train.main(["--out", out, "--resume", "--freeze", "0,1,2"]) == 2
    assert "--freeze 0-2 (the checkpoint has 0-5)" in capsys.readouterr().err


def test_freeze_api():
    lenet.seed(0)
    model = lenet.LeNet5()
    assert model.layers[0].freeze() is model.layers[0]
    assert len(model.parameters()) == 10 and len(model.trainable_parameters()) == 8
    assert len(model.state_dict()) == 10  # frozen parameters are still the model's
    with pytest.raises(ValueError, match="frozen"):
        optim.SGD(model.parameters(), lr=0.1)
    opt = optim.Adam(model.trainable_parameters())
    assert not any(np.shares_memory(p.data, opt.flat) for p in model.layers[0].parameters())
    model.layers[3].freeze()
    trainer = lenet.Trainer(model, opt, log=None)
    with pytest.raises(RuntimeError, match="frozen after"):
        trainer.train_epoch(np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64))
    model.requires_grad_(True)
    assert len(model.trainable_parameters()) == 10
    model.layers[3].unfreeze()


def test_replacing_a_layer_rebuilds_the_plan():
    lenet.seed(0)
    model = lenet.LeNet5()
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    model[-1] = nn.Linear(84, 4)
    with lenet.no_grad():
        assert model(x).shape == (3, 4)
    with pytest.raises(TypeError, match="holds Modules"):
        model[-1] = "a layer"


def test_load_fashion_mnist_errors(tmp_path, monkeypatch):
    with pytest.raises(lenet.data.MNISTNotFound, match="apt-get install dataset-fashion-mnist"):
        lenet.data.load_fashion_mnist(tmp_path / "nowhere")
    for name in lenet.data.FILES.values():  # well-formed IDX files, but not Fashion-MNIST's
        shape = (3,) if "labels" in name else (3, 28, 28)
        header = bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
        (tmp_path / name).write_bytes(header + bytes(int(np.prod(shape))))
    with pytest.raises(lenet.data.ChecksumError, match="not the original Fashion-MNIST"):
        lenet.data.load_fashion_mnist(tmp_path)
    monkeypatch.setenv(lenet.data.ENV_FASHION_DIR, str(tmp_path))
    small = lenet.data.load_fashion_mnist(verify=False)
    assert small.source == "fashion-mnist" and not small.is_synthetic and small.train_images.shape == (3, 28, 28)
