"""python -m lenet.train and python -m lenet.predict: end to end on real MNIST, exact resume, refused arguments."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lenet
from lenet import model_file, predict, train
from test_images import png

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(lenet.__file__)))  # the lenet these tests import


def run(module, *args):
    """`python -m module args` in a subprocess with the same lenet: (exit status, stdout, stderr). It runs in the
    package's folder, since `-m` puts the working directory first on sys.path (from a source checkout, that would
    be the uninstalled package, without its compiled module)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=600, cwd=PACKAGE_ROOT)
    return p.returncode, p.stdout, p.stderr


def tensors(path):
    return model_file.read(path)[1]


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """A LeNet-5 trained for one epoch on MNIST by the train command."""
    out = tmp_path_factory.mktemp("model") / "mnist.lenet"
    rc, stdout, stderr = run("lenet.train", "--epochs", 1, "--out", out, "--data", mnist.path)
    assert rc == 0, stderr
    assert "epoch 1/1" in stdout and "test accuracy" in stdout
    return out


def test_train_writes_a_model_file(trained, mnist):
    model = lenet.load(trained)
    assert model.metadata["accuracy"] > 0.97  # one epoch of LeNet-5 on MNIST (0.9837 measured)
    assert model.metadata["training"]["complete"] and model.metadata["training"]["epochs_done"] == 1
    predicted = model.predict(mnist.test_images)
    assert np.mean(predicted == mnist.test_labels) == pytest.approx(model.metadata["accuracy"])


def test_resume_gives_the_weights_of_an_uninterrupted_run(mnist, tmp_path):
    common = ["--epochs", 3, "--limit", 3000, "--data", mnist.path, "--seed", 3]
    rc, _, err = run("lenet.train", *common, "--out", tmp_path / "whole.lenet", "--threads", 2)
    assert rc == 0, err
    rc, out, err = run("lenet.train", *common, "--out", tmp_path / "cut.lenet", "--threads", 1, "--stop-after", 2)
    assert rc == 0, err
    assert "stopped after epoch 2 of 3" in out
    partial = tensors(tmp_path / "cut.lenet")
    assert lenet.load(tmp_path / "cut.lenet").metadata["training"]["epochs_done"] == 2
    rc, out, err = run("lenet.train", "--out", tmp_path / "cut.lenet", "--resume", "--threads", 2)
    assert rc == 0, err
    assert "epoch 3/3" in out and "epoch 2/3" not in out
    whole, resumed = tensors(tmp_path / "whole.lenet"), tensors(tmp_path / "cut.lenet")
    assert sorted(whole) == sorted(resumed) and "optimizer.velocity" in whole
    for name in whole:
        assert np.array_equal(whole[name], resumed[name]), name
    assert not np.array_equal(partial["param.0"], resumed["param.0"])  # the third epoch did train
    a, b = lenet.load(tmp_path / "whole.lenet"), lenet.load(tmp_path / "cut.lenet")
    assert a.metadata["accuracy"] == b.metadata["accuracy"]


def test_resume_adam_constant_schedule_in_process(mnist, tmp_path, capsys):
    common = ["--model", "lenet5", "--optimizer", "adam", "--schedule", "constant", "--limit", 2000, "--data",
              mnist.path, "--batch", 100]
    assert train.main([*common, "--epochs", 2, "--out", str(tmp_path / "a.lenet")]) == 0
    assert train.main([*common, "--epochs", 1, "--out", str(tmp_path / "b.lenet")]) == 0
    # a constant learning rate: a finished run may be made longer
    assert train.main(["--out", str(tmp_path / "b.lenet"), "--resume", "--epochs", "2"]) == 0
    a, b = tensors(tmp_path / "a.lenet"), tensors(tmp_path / "b.lenet")
    assert {"optimizer.exp_avg", "optimizer.exp_avg_sq"} <= set(a)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_conflicting_arguments(mnist, tmp_path, capsys):
    out = str(tmp_path / "c.lenet")
    assert train.main(["--epochs", 2, "--stop-after", 1, "--limit", 1000, "--data", mnist.path, "--out", out]) == 0
    before = Path(out).read_bytes()
    capsys.readouterr()
    assert train.main(["--out", out, "--resume", "--lr", "0.1", "--batch", "32", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.1 (the checkpoint has 0.05)" in err and "--batch 32 (the checkpoint has 64)" in err
    assert "--epochs 3 (the checkpoint has 2)" in err  # the cosine schedule spans the epochs
    assert train.main(["--out", out, "--resume", "--optimizer", "adam"]) == 2
    assert train.main(["--out", out, "--resume", "--limit", "2000"]) == 2
    assert Path(out).read_bytes() == before
    # the same settings given again are fine
    assert train.main(["--out", out, "--resume", "--lr", "0.05", "--limit", "1000", "--epochs", "2"]) == 0
    assert lenet.load(out).metadata["training"]["complete"]
    assert train.main(["--out", out, "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:precision='bf16' runs on the reference loops:RuntimeWarning")
def test_bf16_run_resumes_in_bf16_and_refuses_fp32(mnist, tmp_path, capsys):
    out = str(tmp_path / "h.lenet")
    common = ["--model", "coreml", "--limit", 1024, "--data", mnist.path, "--epochs", 2]
    assert train.main([*common, "--precision", "bf16", "--stop-after", 1, "--out", out]) == 0
    assert lenet.load(out).metadata["training"]["settings"]["precision"] == "bf16"
    capsys.readouterr()
    assert train.main(["--out", out, "--resume", "--precision", "fp32"]) == 2
    assert "--precision fp32 (the checkpoint has bf16)" in capsys.readouterr().err
    assert train.main(["--out", out, "--resume"]) == 0
    # the same run straight through gives the same weights: the resumed run went on in bf16
    assert train.main([*common, "--precision", "bf16", "--out", str(tmp_path / "whole.lenet")]) == 0
    a, b = tensors(out), tensors(tmp_path / "whole.lenet")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_train_errors(mnist, tmp_path, capsys):
    out = str(tmp_path / "m.lenet")
    cases = [
        (["--out", out, "--resume"], "does not exist"),
        (["--out", str(tmp_path / "no" / "m.lenet")], "does not exist or is not writable"),
        (["--out", out, "--data", str(tmp_path / "nowhere")], "MNIST not found"),
        (["--out", out, "--epochs", "2", "--stop-after", "3", "--data", mnist.path], "past --epochs 2"),
        (["--out", out, "--optimizer", "adam", "--momentum", "0.5"], "--momentum applies to --optimizer sgd"),
        (["--out", out, "--new-head"], "--new-head goes with --finetune"),
        (["--out", out, "--freeze", "12", "--data", mnist.path], "the model has layers 0-11"),
        (["--out", out, "--freeze", "0-11", "--data", mnist.path], "freezes every parameter"),
        (["--out", out, "--finetune", str(tmp_path / "none.lenet")], "--finetune"),
    ]
    for argv, message in cases:
        assert train.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
    assert not os.path.exists(out)
    lenet.save(lenet.LeNet5(), out)
    assert train.main(["--out", out, "--data", mnist.path]) == 2
    assert "--resume continues it" in capsys.readouterr().err
    assert train.main(["--out", out, "--resume"]) == 2
    assert "without training state" in capsys.readouterr().err
    (tmp_path / "junk.lenet").write_bytes(b"junk")
    assert train.main(["--out", str(tmp_path / "junk.lenet"), "--resume"]) == 2
    assert "not a lenet model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train.main(["--out", out, "--freeze", "5-2"])
    assert e.value.code == 2
    assert "expected layer indices" in capsys.readouterr().err


# ---- predict ------------------------------------------------------------------------------------------------------
def test_predict_png_pgm_npy(trained, mnist, tmp_path):
    model = lenet.load(trained)
    images, labels = mnist.test_images[:8], mnist.test_labels[:8]
    paths = []
    for i, img in enumerate(images[:4]):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(img, filters=(i % 5,)))
    paths.append(tmp_path / "4.pgm")
    paths[-1].write_bytes(b"P5\n28 28\n255\n" + images[4].tobytes())
    np.save(tmp_path / "batch.npy", images[5:])
    paths.append(tmp_path / "batch.npy")
    rc, out, err = run("lenet.predict", trained, *paths)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 8
    expected = model.predict(images)
    names = [str(p) for p in paths[:5]] + [f"{paths[5]}[{i}]" for i in range(3)]
    for line, name, cls, img in zip(lines, names, expected, images):
        path, got, proba = line.split("  ")
        assert path == name and got == str(cls)
        assert float(proba) == pytest.approx(model.predict_proba(img).max(), abs=1e-4)
    assert np.mean(expected == labels) >= 0.75  # a model that classifies (these 8 are all right at 0.98)


def test_predict_invert_top_json(trained, mnist, tmp_path, capsys):
    img = mnist.test_images[0]
    (tmp_path / "dark.pgm").write_bytes(b"P2\n28 28\n255\n" + " ".join(map(str, 255 - img.ravel())).encode())
    (tmp_path / "light.png").write_bytes(png(img))
    assert predict.main([str(trained), str(tmp_path / "dark.pgm"), "--invert", "--top", "3"]) == 0
    fields = capsys.readouterr().out.split("  ")
    classes, probas = fields[1::2], [float(p) for p in fields[2::2]]
    assert len(classes) == 3 and probas == sorted(probas, reverse=True)
    assert classes[0] == str(mnist.test_labels[0])
    assert predict.main([str(trained), str(tmp_path / "light.png"), "--json", "--top", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (r,) = doc["results"]
    assert r["class"] == classes[0] and len(r["top"]) == 2 and doc["errors"] == 0
    assert r["probability"] == pytest.approx(probas[0], abs=1e-4)
    # not inverted, the dark-on-light image is something else: --invert matters
    assert predict.main([str(trained), str(tmp_path / "dark.pgm"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["probability"] < r["probability"]


def test_predict_errors(trained, tmp_path, capsys):
    good = tmp_path / "good.png"
    good.write_bytes(png(np.zeros((28, 28), np.uint8)))
    (tmp_path / "small.pgm").write_bytes(b"P5\n20 24\n255\n" + bytes(480))
    (tmp_path / "bad.png").write_bytes(png(np.zeros((28, 28), np.uint8))[:-30])
    rc = predict.main([str(trained), str(tmp_path / "small.pgm"), str(good), str(tmp_path / "bad.png"),
                       str(tmp_path / "missing.png")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.startswith(str(good)) and len(out.splitlines()) == 1  # the good one is still classified
    assert "small.pgm: the image is 20x24 pixels (width x height); the model takes 28x28 images" in err
    assert "bad.png: truncated PNG" in err and "missing.png: No such file or directory" in err
    assert predict.main([str(good), str(good)]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        predict.main([str(trained), str(good), "--top", "0"])
    assert e.value.code == 2
