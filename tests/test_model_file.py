"""Model files (lenet.save / lenet.load) and the one-call inference path (Model.predict / predict_proba)."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

import lenet
from lenet import graph, nn


def small_models():
    """Graphs that exercise every layer kind and option of the planner (fusion in both orders, stride, padding,
    avg pooling, tanh, no bias)."""
    return {
        "lenet5": lenet.LeNet5(),
        "coreml": lenet.CoreMLNet(),
        "options": nn.Sequential(
            nn.Conv2d(1, 5, 3, stride=2, padding=(1, 2)), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(5, 7, (2, 3), bias=False), nn.Tanh(), nn.AvgPool2d(2, stride=1),
            nn.Flatten(), nn.Linear(7 * 5 * 4, 13, bias=False), nn.Tanh(), nn.Linear(13, 4)),
    }


def reference_logits(model, x):
    with lenet.no_grad():
        return model(lenet.Tensor(x)).numpy()


@pytest.mark.parametrize("name", ["lenet5", "coreml", "options"])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 16, 17, 40])
def test_predict_matches_autograd_forward(isa, rng, name, n):
    model = small_models()[name]
    m = lenet.Model(model)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(m.logits(x), reference_logits(model, x), rtol=1e-4, atol=1e-5)
    u8 = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(m.logits(u8), reference_logits(model, u8[:, None].astype(np.float32) / 255),
                               rtol=1e-4, atol=1e-5)


def test_predict_shapes_and_errors(rng):
    m = lenet.Model(lenet.LeNet5())
    img = rng.random((28, 28), dtype=np.float32)
    assert isinstance(m.predict(img), int)
    assert m.predict(img[None]).tolist() == [m.predict(img)]  # (1, H, W): a batch of one
    assert m.predict_proba(img).shape == (10,)
    np.testing.assert_allclose(m.predict_proba(img).sum(), 1.0, rtol=1e-5)
    batch = rng.random((5, 28, 28), dtype=np.float32)
    assert m.predict(batch).shape == (5,)
    assert m.predict_proba(batch[:, None]).shape == (5, 10)
    assert m.predict(batch.astype(np.float64)).tolist() == m.predict(batch).tolist()
    assert m.predict(batch[::2]).tolist() == m.predict(batch)[::2].tolist()  # strided views
    assert m.predict(np.asfortranarray(img)) == m.predict(img)
    assert m.predict(batch.tolist()).tolist() == m.predict(batch).tolist()  # any array-like
    with pytest.raises(ValueError, match=r"shape \(5, 27, 28\)"):
        m.predict(batch[:, :27])
    with pytest.raises(TypeError, match="uint8 pixels"):
        m.predict(batch.astype(np.int32))
    with pytest.raises(ValueError, match="NaN"):
        m.predict(np.full((28, 28), np.nan, np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        m.predict(np.zeros((0, 28, 28), np.float32))


def test_predict_sees_further_training(rng):
    model = lenet.LeNet5()
    m = lenet.Model(model)
    x = rng.random((3, 28, 28), dtype=np.float32)
    before = m.logits(x)
    lenet.optim.SGD(model.parameters(), lr=0.1)  # re-homes the parameter arrays into one flat buffer
    model.parameters()[-1].data += 1.0  # the last bias: every logit moves by 1
    np.testing.assert_allclose(m.logits(x), before + 1.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5", "coreml"])
@pytest.mark.parametrize("n", [1, 3])
def test_predict_sees_convolution_weights_changed_in_place(isa, rng, name, n):
    """One sample at a time, the engine keeps each convolution's weights regrouped channels-last: a change made in
    place to any of them (here every convolution's, one after the other) shows in the next call."""
    model = small_models()[name]
    m = lenet.Model(model)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    for conv in [layer for layer in model.layers if isinstance(layer, nn.Conv2d)]:
        before = m.logits(x)
        conv.weight.data[...] = conv.weight.data[::-1] * -1.5  # in place: the same array, new values
        want = reference_logits(model, x)
        assert not np.allclose(before, want, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(m.logits(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5", "coreml", "options"])
def test_save_load_round_trip(tmp_path, rng, name):
    model = small_models()[name]
    path = tmp_path / "m.lenet"
    classes = [f"class {i}" for i in range(graph.analyse(graph.describe(model))[1])]
    lenet.save(model, path, classes=classes, accuracy=0.75, note="round trip")
    loaded = lenet.load(path)
    assert loaded.classes == classes
    assert loaded.metadata["accuracy"] == 0.75 and loaded.metadata["note"] == "round trip"
    assert loaded.metadata["format_version"] == 1 and loaded.input_shape == (1, 28, 28)
    assert loaded.graph == graph.describe(model)
    for a, b in zip(graph.parameters(model), graph.parameters(loaded.module)):
        np.testing.assert_array_equal(a.data, b.data)
    x = rng.random((9, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.logits(x), lenet.Model(model).logits(x))
    assert [p for p in os.listdir(tmp_path)] == ["m.lenet"]  # no temporary file left behind


def test_file_layout_is_as_documented(tmp_path):
    path = tmp_path / "m.lenet"
    lenet.save(lenet.LeNet5(), path)
    data = path.read_bytes()
    magic, version, header_len, payload_len = struct.unpack("<8sIIQ", data[:24])
    assert magic == b"LENETMDL" and version == 1
    header = json.loads(data[24:24 + header_len])
    assert header["graph"]["layers"][0]["kind"] == "conv2d"
    start = (24 + header_len + 63) // 64 * 64
    assert len(data) == start + payload_len + 4
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    first = header["tensors"][0]
    w = np.frombuffer(data[start + first["offset"]:][:first["nbytes"]], np.float32)
    np.testing.assert_array_equal(w, lenet.load(path).module.layers[0].weight.data.ravel())


def test_damaged_files_raise_clear_errors(tmp_path):
    path = tmp_path / "m.lenet"
    lenet.save(lenet.LeNet5(), path)
    good = path.read_bytes()

    def expect(data, pattern):
        bad = tmp_path / "bad.lenet"
        bad.write_bytes(data)
        with pytest.raises(lenet.ModelFileError, match=pattern):
            lenet.load(bad)

    expect(good[: len(good) // 2], "truncated")
    expect(good[:10], "truncated")
    expect(b"", "not a lenet model file")
    expect(b"GIF89a" + good[6:], "not a lenet model file")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    expect(bytes(flipped), "checksum mismatch")
    expect(good + b"\0", "unexpected bytes")
    newer = bytearray(good)
    newer[8:12] = struct.pack("<I", 2)
    expect(bytes(newer), "format version 2 is not supported")
    with pytest.raises(lenet.ModelFileError, match="cannot open"):
        lenet.load(tmp_path / "missing.lenet")
    with pytest.raises(lenet.ModelFileError, match="is a directory, not a model file"):
        lenet.load(tmp_path)  # was libstdc++'s RuntimeError from reading a directory
    assert issubclass(lenet.ModelFileError, ValueError)


def _rewrite_header(good: bytes, edit) -> bytes:
    """A file with an edited header and a valid checksum (what a buggy writer could produce)."""
    _, _, header_len, payload_len = struct.unpack("<8sIIQ", good[:24])
    header = json.loads(good[24:24 + header_len])
    start = (24 + header_len + 63) // 64 * 64
    payload = good[start:start + payload_len]
    edit(header)
    text = json.dumps(header).encode()
    pre = struct.pack("<8sIIQ", b"LENETMDL", 1, len(text), len(payload)) + text
    body = pre + b"\0" * ((-len(pre)) % 64) + payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("edit, pattern", [
    (lambda h: h["tensors"][0].update(offset=10 ** 9), "outside the payload"),
    (lambda h: h["tensors"][0].update(nbytes=4), "nbytes does not match"),
    (lambda h: h["tensors"][0].update(dtype="float16"), "unknown dtype"),
    (lambda h: h.pop("graph"), "no \"graph\""),
    (lambda h: h["graph"]["layers"][0].update(kind="conv3d"), "unknown kind \"conv3d\""),
    (lambda h: h["graph"]["layers"][7].update(in_features=300), "in_features is 300"),
    (lambda h: h["tensors"].pop(), "parameter 9 should be float32"),
])
def test_malformed_headers_raise_clear_errors(tmp_path, edit, pattern):
    path = tmp_path / "m.lenet"
    lenet.save(lenet.LeNet5(), path)
    bad = tmp_path / "bad.lenet"
    bad.write_bytes(_rewrite_header(path.read_bytes(), edit))
    with pytest.raises(lenet.ModelFileError, match=pattern):
        lenet.load(bad)


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.lenet"
    lenet.save(lenet.LeNet5(), path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="float64"):
        lenet.save(lenet.LeNet5(), path, extra_tensors={"bad": np.zeros(3)})
    with pytest.raises(lenet.ModelFileError, match="cannot write"):
        lenet.save(lenet.LeNet5(), tmp_path / "no-such-folder" / "m.lenet")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.lenet"]


def test_trained_model_keeps_its_accuracy(tmp_path, mnist):
    lenet.seed(0)
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, lenet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), captured=True,
                            lr_schedule="cosine", log=None)
    trainer.fit(mnist.train_images[:12000], mnist.train_labels[:12000], 1)
    accuracy = trainer.evaluate(mnist.test_images, mnist.test_labels)["accuracy"]
    assert accuracy > 0.9
    lenet.save(model, tmp_path / "m.lenet", accuracy=accuracy)
    loaded = lenet.load(tmp_path / "m.lenet")
    predicted = loaded.predict(mnist.test_images)
    assert (predicted == mnist.test_labels).mean() == pytest.approx(accuracy, abs=1e-12)
    assert loaded.metadata["accuracy"] == accuracy


def test_predict_shapes_of_a_colour_model(rng):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    m = lenet.Model(module, input_shape=(3, 8, 8))
    img = rng.random((3, 8, 8), dtype=np.float32)
    want = reference_logits(module, img[None])
    np.testing.assert_allclose(m.logits(img), want[0], rtol=1e-5, atol=1e-6)  # one image: (C, H, W)
    np.testing.assert_allclose(m.logits(img[None]), want, rtol=1e-5, atol=1e-6)  # a batch: (N, C, H, W)
    with pytest.raises(ValueError, match=r"takes one image \(3, 8, 8\) or a batch \(N, 3, 8, 8\)"):
        m.logits(img[0])
