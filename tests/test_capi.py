"""The C API (csrc/capi/lenet.h) through ctypes: it reads the model files Python writes, predicts the same logits,
trains, saves files Python reads, and reports bad input as errors. Needs the shared library: .ci/run builds it
and sets LENET_C_LIBRARY (cmake -S . -B build/capi && ninja -C build/capi gives build/capi/liblenet.so)."""
import ctypes
import json
import os

import numpy as np
import pytest

import lenet
from lenet import graph

LIB = os.environ.get("LENET_C_LIBRARY")
pytestmark = pytest.mark.skipif(not LIB, reason="set LENET_C_LIBRARY to the built liblenet.so to test the C API")

F32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
U8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
I32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")


@pytest.fixture(scope="module")
def c():
    lib = ctypes.CDLL(LIB)
    sig = {
        "lenet_last_error": ([], ctypes.c_char_p), "lenet_version": ([], ctypes.c_char_p),
        "lenet_isa": ([], ctypes.c_char_p), "lenet_load": ([ctypes.c_char_p], ctypes.c_void_p),
        "lenet_create": ([ctypes.c_char_p, ctypes.c_uint64], ctypes.c_void_p),
        "lenet_save": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int), "lenet_free": ([ctypes.c_void_p], None),
        "lenet_num_classes": ([ctypes.c_void_p], ctypes.c_int),
        "lenet_class_name": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_char_p),
        "lenet_predict": ([ctypes.c_void_p, F32, ctypes.c_int, F32], ctypes.c_int),
        "lenet_predict_u8": ([ctypes.c_void_p, U8, ctypes.c_int, F32], ctypes.c_int),
        "lenet_classify_u8": ([ctypes.c_void_p, U8, ctypes.c_int, I32], ctypes.c_int),
        "lenet_train_step_u8": ([ctypes.c_void_p, U8, I32, ctypes.c_int, ctypes.c_float, ctypes.c_float,
                                 ctypes.POINTER(ctypes.c_float)], ctypes.c_int),
    }
    for name, (args, res) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def test_version_matches_the_package(c):
    assert c.lenet_version().decode() == lenet.__version__
    assert c.lenet_isa().decode() in lenet.available_isas()


@pytest.mark.parametrize("n", [1, 5, 16, 33])
def test_c_predicts_what_python_predicts(c, tmp_path, rng, n):
    model = lenet.LeNet5()
    lenet.save(model, tmp_path / "m.lenet", classes=list("abcdefghij"))
    m = c.lenet_load(str(tmp_path / "m.lenet").encode())
    assert m, c.lenet_last_error()
    try:
        assert c.lenet_num_classes(m) == 10 and c.lenet_class_name(m, 3) == b"d"
        x = rng.random((n, 1, 28, 28), dtype=np.float32)
        out = np.zeros((n, 10), np.float32)
        assert c.lenet_predict(m, x, n, out) == 0
        np.testing.assert_allclose(out, lenet.Model(model).logits(x), rtol=1e-5, atol=1e-6)
        u8 = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        assert c.lenet_predict_u8(m, u8, n, out) == 0
        np.testing.assert_allclose(out, lenet.Model(model).logits(u8), rtol=1e-5, atol=1e-6)
    finally:
        c.lenet_free(m)


def test_c_trains_and_python_reads_the_result(c, tmp_path, mnist):
    m = c.lenet_create(json.dumps(graph.describe(lenet.LeNet5())).encode(), 7)
    assert m, c.lenet_last_error()
    images, labels = mnist.train_images[:6400], mnist.train_labels[:6400].astype(np.int32)
    loss = ctypes.c_float()
    losses = []
    for epoch in range(2):
        for i in range(0, len(images), 64):
            assert c.lenet_train_step_u8(m, np.ascontiguousarray(images[i:i + 64]), np.ascontiguousarray(labels[i:i + 64]),
                                         64, 0.05, 0.9, ctypes.byref(loss)) == 0
            losses.append(loss.value)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    assert c.lenet_save(m, str(tmp_path / "trained.lenet").encode()) == 0
    predicted = np.zeros(10000, np.int32)
    assert c.lenet_classify_u8(m, mnist.test_images, 10000, predicted) == 0
    c.lenet_free(m)
    loaded = lenet.load(tmp_path / "trained.lenet")
    assert (loaded.predict(mnist.test_images) == predicted).all()
    assert (predicted == mnist.test_labels).mean() > 0.9


def test_c_reads_int8_files(c, tmp_path, rng):
    model = lenet.LeNet5()
    q = lenet.quantize(model, rng.integers(0, 256, (200, 28, 28), dtype=np.uint8), samples=200)
    q.save(tmp_path / "q.lenet")
    m = c.lenet_load(str(tmp_path / "q.lenet").encode())
    assert m, c.lenet_last_error()
    try:
        u8 = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
        out = np.zeros((7, 10), np.float32)
        assert c.lenet_predict_u8(m, u8, 7, out) == 0
        np.testing.assert_array_equal(out, q.logits(u8))  # the same int8 engine: the same bits
        assert c.lenet_train_step_u8(m, u8, np.zeros(7, np.int32), 7, 0.1, 0.0, None) < 0
        assert b"int8 model is for inference" in c.lenet_last_error()
        assert c.lenet_save(m, str(tmp_path / "again.lenet").encode()) < 0
        assert b"lenet.quantize" in c.lenet_last_error()
    finally:
        c.lenet_free(m)


def test_c_errors_are_reported(c, tmp_path):
    assert not c.lenet_load(str(tmp_path / "missing.lenet").encode())
    assert b"cannot open" in c.lenet_last_error()
    (tmp_path / "junk.lenet").write_bytes(b"not a model")
    assert not c.lenet_load(str(tmp_path / "junk.lenet").encode())
    assert b"not a lenet model file" in c.lenet_last_error()
    assert not c.lenet_create(b'{"input": [1, 28, 28], "layers": [{"kind": "flatten"}, '
                              b'{"kind": "linear", "in_features": 700, "out_features": 10, "bias": true}]}', 0)
    assert b"in_features is 700" in c.lenet_last_error()
    assert not c.lenet_create(b"{", 0)
    assert b"invalid JSON" in c.lenet_last_error()
    m = c.lenet_create(json.dumps(graph.describe(lenet.LeNet5())).encode(), 0)
    try:
        images = np.zeros((2, 28, 28), np.uint8)
        assert c.lenet_train_step_u8(m, images, np.array([1, 10], np.int32), 2, 0.1, 0.9, None) < 0
        assert b"labels[1] = 10" in c.lenet_last_error()
        assert c.lenet_train_step_u8(m, images, np.array([1, 2], np.int32), 2, -1.0, 0.9, None) < 0
        assert b"lr must be positive" in c.lenet_last_error()
        assert c.lenet_predict_u8(m, images, 0, np.zeros(10, np.float32)) < 0
        assert b"n must be positive" in c.lenet_last_error()
        assert c.lenet_class_name(m, 10) is None
        assert c.lenet_save(m, str(tmp_path / "no-such-dir" / "m.lenet").encode()) < 0
        assert b"cannot write" in c.lenet_last_error()
    finally:
        c.lenet_free(m)
