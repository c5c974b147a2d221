"""The README's Python examples as a user pastes them: its ```python blocks run in order in one namespace, in a fresh
folder, on real MNIST (LENET_MNIST_DIR), and what their comments promise (a file written, a class, an accuracy, a
shape) is checked. A block that needs an optional extra (onnxruntime) or Debian's Fashion-MNIST skips, saying so."""
import importlib.util
import os
import pathlib
import re

import numpy as np
import pytest

import lenet

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list:
    """(first line number, code) of each ```python block of the README, in order."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


BLOCKS = python_blocks()


def block_index(first_line: str) -> int:
    """The index of the block whose code starts with first_line (so a reordered README fails here, by name)."""
    found = [i for i, (_, code) in enumerate(BLOCKS) if code.startswith(first_line)]
    assert len(found) == 1, f"README: {len(found)} python blocks start with {first_line!r}"
    return found[0]


TRAIN = block_index("import lenet\nfrom lenet import optim\n")
AUTOGRAD = block_index("import numpy as np\nimport lenet.functional as F\n")
PREDICT = block_index('model = lenet.load("mnist.lenet")')
INT8 = block_index("q = lenet.quantize(model, mnist.train_images)")
ONNX = block_index("import onnxruntime as ort\n")
FINETUNE = block_index("import lenet\nfrom lenet import nn, optim\n")


@pytest.fixture(scope="module")
def readme(mnist, tmp_path_factory):
    """run(i): the README's blocks up to and including block i, each once, in one namespace; returns it. They run
    in a fresh folder (their files land there) with 2 threads, and lenet.data.load_mnist() finds LENET_MNIST_DIR."""
    folder = tmp_path_factory.mktemp("readme")
    namespace, done = {"__name__": "__readme__"}, []
    threads = lenet.get_num_threads()

    def run(i: int) -> dict:
        cwd = os.getcwd()
        os.chdir(folder)
        lenet.set_num_threads(2)
        try:
            while len(done) <= i:
                line, code = BLOCKS[len(done)]
                # without onnxruntime the ONNX example cannot run (test_readme_onnx skips); no later block uses it
                if len(done) != ONNX or importlib.util.find_spec("onnxruntime") is not None:
                    exec(compile(code, f"README.md, the block of line {line}", "exec"), namespace)
                done.append(line)
        finally:
            os.chdir(cwd)
            lenet.set_num_threads(threads)
        return namespace

    run.folder = folder
    return run


def test_readme_blocks_are_found():
    assert len(BLOCKS) == 6, [line for line, _ in BLOCKS]  # a new block needs its own test here


def test_readme_train(readme):
    ns = readme(TRAIN)
    assert ns["trainer"].history[-1]["test_accuracy"] > 0.97  # the comment: 0.9834 after one epoch
    assert (readme.folder / "mnist.lenet").is_file()
    assert ns["lenet"].kernels()["isa"] in ("reference", "avx2", "avx512", "neon")


def test_readme_autograd(readme):
    ns = readme(AUTOGRAD)
    assert ns["model"](ns["x"]).numpy().shape == (32, 10)
    grads = [p.grad for p in ns["model"].parameters()]
    assert all(g is not None and np.isfinite(g).all() for g in grads) and any(np.abs(g).sum() > 0 for g in grads)


def test_readme_predict(readme):
    ns = readme(PREDICT)
    model, mnist = ns["model"], ns["mnist"]
    assert model.predict(mnist.test_images[0]) == 7
    classes = model.predict(mnist.test_images)
    assert classes.shape == (10000,) and (classes == mnist.test_labels).mean() > 0.97
    proba = model.predict_proba(mnist.test_images[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert model.metadata["accuracy"] > 0.97 and model.classes == [str(d) for d in range(10)]


def test_readme_int8(readme):
    ns = readme(INT8)
    mnist = ns["mnist"]
    again = lenet.load(readme.folder / "mnist-int8.lenet")
    assert type(again).__name__ == "QuantizedModel"
    assert (again.predict(mnist.test_images) == mnist.test_labels).mean() > 0.97


def test_readme_onnx(readme):
    pytest.importorskip("onnxruntime", reason='the ONNX example needs pip install ".[onnx]"')
    ns = readme(ONNX)
    logits, model = ns["logits"], ns["model"]
    assert logits.shape == (10000, 10)
    assert np.array_equal(logits.argmax(axis=1), model.predict(ns["mnist"].test_images))


def test_readme_finetune(readme):
    try:
        lenet.data.load_fashion_mnist()
    except lenet.data.MNISTNotFound as exc:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc.reason}")
    ns = readme(FINETUNE)
    assert ns["trainer"].history[-1]["test_accuracy"] > 0.8  # the comment: 0.8397 after 3 epochs
    saved = lenet.load(readme.folder / "fashion.lenet")
    assert saved.classes == list(lenet.data.FASHION_CLASSES)
