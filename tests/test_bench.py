"""Tests of lenet.bench: the FLOP counter, the CLI (in a subprocess and in-process with fake peers), the JSON."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lenet
import lenet.bench as bench
from lenet.bench import CpuMeter, Peer, epoch_time, peer_available, write_json_atomic
from lenet.bench import __main__ as cli
from lenet.bench.flops import count_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- FLOPs -------------------------------------------------------------------------------------------------------
def test_flops_lenet5_match_the_performance_notes():
    f = count_flops(lenet.LeNet5())
    assert f.forward == 833_040
    assert f.backward == 1_430_880
    assert f.step == 2_263_920
    counted = [layer for layer in f.layers if layer.forward]
    assert [layer.forward for layer in counted] == [235_200, 480_000, 96_000, 20_160, 1_680]
    assert counted[0].backward_input == 0  # the first conv needs no input gradient
    assert all(layer.backward_input == layer.forward for layer in counted[1:])
    assert all(layer.backward_weight == layer.forward for layer in counted)
    assert counted[0].out_shape == (6, 28, 28) and counted[1].out_shape == (16, 10, 10)


def test_flops_coreml_about_7_8_mflop_per_step():
    f = count_flops(lenet.CoreMLNet())
    assert f.forward == 2 * (32 * 26 * 26 * 9 + 32 * 12 * 12 * 32 * 4 + 1152 * 500 + 500 * 10)
    assert f.step == 7_803_696
    assert abs(f.step - 7.8e6) / 7.8e6 < 0.01


def test_flops_follow_the_layers_not_a_table():
    from lenet.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
    model = Sequential(Conv2d(1, 4, 3, stride=2, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 7 * 7, 10))
    f = count_flops(model)
    conv, fc = 2 * 4 * 14 * 14 * 9, 2 * 196 * 10
    assert (f.forward, f.backward) == (conv + fc, conv + 2 * fc)
    assert f.as_dict()["step_per_sample"] == f.step


def test_flops_refuse_unknown_layers_with_weights():
    from lenet.nn import Module, Sequential
    from lenet.tensor import Tensor

    class Mystery(Module):
        def __init__(self):
            self.weight = Tensor(np.zeros((3, 3), np.float32), requires_grad=True)

    with pytest.raises(TypeError, match="Mystery"):
        count_flops(Sequential(Mystery()))
    with pytest.raises(ValueError, match="expects"):
        count_flops(lenet.LeNet5(), input_shape=(3, 28, 28))


# ---- helpers -----------------------------------------------------------------------------------------------------
def test_epoch_time_rule():
    assert epoch_time([5.0]) == (5.0, "the only epoch")
    assert epoch_time([9.0, 2.0]) == (2.0, "epoch 2")
    assert epoch_time([9.0, 2.0, 4.0, 3.0]) == (3.0, "median of epochs 2-4")
    with pytest.raises(ValueError):
        epoch_time([])


def test_peer_availability():
    assert peer_available(Peer("x", "x.py", "json", ()))
    assert not peer_available(Peer("x", "x.py", "lenet_no_such_framework_xyz", ()))
    assert not peer_available(Peer("x", "x.py", "lenet_no_such_pkg_xyz.sub", ()))
    assert set(bench.PEERS) == {"torch", "tensorflow"}
    for peer in bench.PEERS.values():
        assert os.path.isfile(bench.peer_script(peer)), peer


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    write_json_atomic(str(path), {"a": [1, 2.5]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    assert os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}  # untouched by the failed write
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat")
def test_cpu_meter_sees_our_own_work():
    import time
    meter = CpuMeter()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.3:
        pass
    cpu = meter.stop()
    assert set(cpu) == {"wall_seconds", "own_cores", "others_cores", "steal_cores"}
    assert 0.2 < cpu["own_cores"] <= 1.2 and cpu["others_cores"] >= 0 and cpu["wall_seconds"] >= 0.3


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                    reason="needs two usable CPUs and sched_setaffinity")
def test_core_round_trip_probe():
    """Two threads handing a cache line back and forth: a positive, plausible time (a few ns would mean no second
    core took part); NaN with one usable CPU; the caller's CPU set is restored. The probe also gives NaN when a
    batch overruns its 50 ms, as when another process holds the second CPU (seen when a test run shared the machine
    with another): up to 5 tries, so that only a probe that never measures fails."""
    from lenet import _core
    cpus = os.sched_getaffinity(0)
    tries = [_core.core_round_trip_ns(500)]
    while np.isnan(tries[-1]) and len(tries) < 5:
        tries.append(_core.core_round_trip_ns(500))
    ns = tries[-1]
    assert 10 < ns < 100_000, tries
    assert os.sched_getaffinity(0) == cpus
    os.sched_setaffinity(0, {min(cpus)})
    try:
        assert np.isnan(_core.core_round_trip_ns(50))
    finally:
        os.sched_setaffinity(0, cpus)
    for bad in (0, -1, 10**7):
        with pytest.raises(ValueError, match="trips"):
            _core.core_round_trip_ns(bad)


def test_phase_warning_only_when_the_round_trip_moved():
    from lenet.bench.__main__ import phase_warning, round_trip_range
    assert round_trip_range([None]) is None and round_trip_range([]) is None
    assert round_trip_range([80, 85, None, 150]) == (80, 150)
    assert phase_warning(round_trip_range([80, 85, None, 150])) is None and phase_warning(None) is None
    message = phase_warning(round_trip_range([85, 400, None, 90]))
    assert "85 to 400 ns" in message and message.startswith("WARNING")


# ---- argument handling -------------------------------------------------------------------------------------------
def test_model_dependent_defaults():
    a = cli.parse_args([])
    assert (a.model, a.epochs, a.batch, a.optimizer, a.lr, a.momentum) == ("lenet5", 3, 64, "sgd", 0.05, 0.9)
    assert a.threads >= 1 and a.compare == []
    a = cli.parse_args(["--model", "coreml"])
    assert (a.batch, a.optimizer, a.lr) == (128, "adam", 1e-3)
    a = cli.parse_args(["--model", "coreml", "--optimizer", "sgd", "--compare", "TF, pytorch,torch"])
    assert (a.optimizer, a.lr, a.compare) == ("sgd", 0.05, ["tensorflow", "torch"])


@pytest.mark.parametrize("argv, message", [
    (["--model", "vgg"], "invalid choice: 'vgg'"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--threads", "two"], "--threads: expected a positive integer"),
    (["--epochs", "-1"], "--epochs: must be >= 1"),
    (["--lr", "0"], "--lr: must be a positive number"),
    (["--momentum", "1"], "--momentum: must be in [0, 1)"),
    (["--compare", "torch,caffe"], "unknown framework 'caffe'"),
    (["--compare", ","], "no framework named"),
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--precision", "bf16", "--step", "autograd"], "needs the captured step"),
    (["--precision", "bf16", "--latency"], "measures fp32 inference"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---- the CLI in a subprocess -------------------------------------------------------------------------------------
def _env(tmp_path):
    env = dict(os.environ)
    env["LENET_CACHE_DIR"] = str(tmp_path / "cache")  # never write into the user's cache
    return env


def _bench(tmp_path, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lenet.bench", *args], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=str(tmp_path), timeout=timeout)


def test_cli_runs_and_writes_json(tmp_path):
    out = tmp_path / "out.json"
    # MNIST from $LENET_MNIST_DIR when set, else the synthetic set (--no-download: no network in tests)
    extra = [] if os.environ.get("LENET_MNIST_DIR") else ["--no-download"]
    p = _bench(tmp_path, "--limit", "2000", "--epochs", "1", "--schedule", "constant", "--json", str(out), *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    isa = lenet.kernels()["isa"]
    assert re.search(rf"instruction set\s*: {isa}\b", p.stdout), p.stdout
    m = re.search(r"final test accuracy (0\.\d{4}|1\.0000)", p.stdout)
    assert m, p.stdout
    doc = json.loads(out.read_text())
    for key in ("config", "machine", "versions", "kernels", "data", "flops", "lenet", "peers", "comparison",
                "ratios"):
        assert key in doc, key
    assert doc["config"]["model"] == "lenet5" and doc["config"]["epochs"] == 1 and doc["config"]["limit"] == 2000
    assert doc["kernels"]["isa"] == isa
    assert doc["versions"]["numpy"] == np.__version__ and doc["versions"]["lenet"] == lenet.__version__
    for key in ("platform", "cpu_model", "cpu_count"):
        assert doc["machine"][key]
    assert doc["flops"]["step_per_sample"] == 2_263_920
    assert doc["data"]["n_train"] == 2000 and doc["data"]["n_test"] > 0
    assert doc["peers"] == {} and doc["ratios"] == {}
    (rec,) = doc["lenet"]["epochs"]
    assert rec["epoch"] == 1 and rec["seconds"] > 0
    assert rec["samples_per_s"] == pytest.approx(2000 / rec["seconds"], rel=1e-6)
    assert rec["gflops"] == pytest.approx(2_263_920 * 2000 / rec["seconds"] / 1e9, rel=1e-6)
    assert np.isfinite(rec["loss"]) and 0.0 <= rec["test_acc"] <= 1.0
    if os.path.exists("/proc/stat"):
        assert rec["cpu"]["others_cores"] >= 0 and rec["cpu"]["own_cores"] > 0
    assert float(m.group(1)) == pytest.approx(rec["test_acc"], abs=1e-4)
    m = re.search(r"1 epoch\(s\) of training in (\d+\.\d) s", p.stdout)  # the whole run's training time
    assert m and doc["lenet"]["training_seconds"] == rec["seconds"], p.stdout
    assert float(m.group(1)) == pytest.approx(rec["seconds"], abs=0.051)
    assert 0 < rec["kernel_seconds"] < rec["seconds"] and 0 < rec["outside_kernels"] < 1
    assert doc["lenet"]["peak_gflops"] > 0
    assert doc["lenet"]["peak_share"] == pytest.approx(doc["lenet"]["gflops"] / doc["lenet"]["peak_gflops"])
    assert rec["test_acc"] > 0.2, "31 SGD steps should beat chance (0.1) by far"
    if len(os.sched_getaffinity(0)) >= 2:  # the core-to-core round trip, after the epoch and before the run
        assert rec["core_round_trip_ns"] > 10 and doc["machine"]["core_round_trip_ns_before"] > 10
        both = [rec["core_round_trip_ns"], doc["machine"]["core_round_trip_ns_before"]]
        assert doc["core_round_trip_ns_range"] == [min(both), max(both)]
        assert re.search(r"core-to-core\s*: \d+ ns round trip", p.stdout) and "c2c ns" in p.stdout
    if doc["data"]["source"] == "mnist":
        assert "SYNTHETIC" not in p.stdout
    else:
        assert doc["data"]["synthetic"] and doc["data"]["note"]
        assert "SYNTHETIC" in p.stdout and "NOT MNIST" in p.stdout


def test_latency_is_measured_on_one_thread(tmp_path):
    out = tmp_path / "lat.json"
    extra = [] if os.environ.get("LENET_MNIST_DIR") else ["--no-download"]
    p = _bench(tmp_path, "--limit", "500", "--epochs", "1", "--latency", "--json", str(out), *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    lat = json.loads(out.read_text())["lenet"]["infer_latency_us"]
    assert 0 < lat["min_us"] <= lat["median_us"] and lat["calls"] >= 1000
    assert f"{lat['median_us']:.1f} us" in p.stdout


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "run.png"
    extra = [] if os.environ.get("LENET_MNIST_DIR") else ["--no-download"]
    p = _bench(tmp_path, "--limit", "1000", "--epochs", "2", "--plot", str(png), *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in tmp_path.iterdir() if f.suffix == ".png"] == ["run.png"]  # no temporary left


def test_cli_unavailable_isa_exits_2_without_traceback(tmp_path):
    p = _bench(tmp_path, "--isa", "nosuchisa", "--data", "synthetic", "--limit", "64", "--epochs", "1")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "error:" in p.stderr and "nosuchisa" in p.stderr and "available" in p.stderr


def test_cli_missing_data_folder_and_bad_model(tmp_path):
    p = _bench(tmp_path, "--data", str(tmp_path / "nowhere"), "--limit", "64", "--epochs", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--data" in p.stderr and "nowhere" in p.stderr
    p = _bench(tmp_path, "--model", "alexnet")
    assert p.returncode == 2 and "invalid choice" in p.stderr


# ---- the comparison, in-process with fake peers ------------------------------------------------------------------
FAKE_PEER = textwrap.dedent("""
    import argparse, json, sys
    import numpy as np
    p = argparse.ArgumentParser()
    for a in ("--data", "--model", "--optimizer", "--schedule", "--precision", "--out"):
        p.add_argument(a)
    for a in ("--epochs", "--batch", "--threads", "--seed"):
        p.add_argument(a, type=int)
    for a in ("--lr", "--momentum"):
        p.add_argument(a, type=float)
    a = p.parse_args()
    if {fail}:
        print("fake: something broke", file=sys.stderr)
        sys.exit(3)
    with np.load(a.data) as z:
        x, y, xt, yt = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and 0 <= x.min() and x.max() <= 1, x.shape
    assert y.dtype == np.int64 and y.shape == (len(x),) and yt.shape == (len(xt),)
    epochs = []
    for e in range(1, a.epochs + 1):
        epochs.append({{"epoch": e, "seconds": {seconds} * (3 if e == 1 else 1), "loss": 1.0, "test_acc": 0.5}})
        print("[fake] epoch %d/%d" % (e, a.epochs), file=sys.stderr, flush=True)
    args = {{k: v for k, v in vars(a).items() if k not in ("data", "out")}}
    json.dump({{"framework": "fake", "version": "9.9", "epochs": epochs, "n_train": len(x), "args": args}},
              open(a.out, "w"))
""")


@pytest.fixture
def restore_threads():
    n = lenet.get_num_threads()
    yield n
    lenet.set_num_threads(n)


def _fake_peer(tmp_path, monkeypatch, name, fail=False, seconds=0.5, module="json"):
    script = tmp_path / f"peer_{name}.py"
    script.write_text(FAKE_PEER.format(fail=fail, seconds=seconds))
    monkeypatch.setitem(bench.PEERS, name, Peer(name, str(script), module, ()))


def test_compare_with_fake_peers(tmp_path, monkeypatch, capsys, restore_threads):
    _fake_peer(tmp_path, monkeypatch, "fake", seconds=0.5)
    _fake_peer(tmp_path, monkeypatch, "ghost", module="lenet_no_such_framework_xyz")
    out = tmp_path / "cmp.json"
    rc = cli.main(["--data", "synthetic", "--limit", "300", "--epochs", "2", "--batch", "32", "--lr", "0.01",
                   "--seed", "7", "--threads", str(restore_threads), "--compare", "fake,ghost", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "[fake] epoch 2/2" in text  # progress relayed while it runs
    assert re.search(r"ghost\s+-\s+not installed", text), text
    assert "SYNTHETIC" in text
    doc = json.loads(out.read_text())
    fake = doc["peers"]["fake"]
    assert fake["status"] == "ok" and doc["peers"]["ghost"] == {"status": "not installed"}
    assert fake["result"]["n_train"] == 300
    assert fake["result"]["args"] == {"model": "lenet5", "optimizer": "sgd", "epochs": 2, "batch": 32,
                                      "threads": restore_threads, "seed": 7, "lr": 0.01, "momentum": 0.9,
                                      "schedule": "cosine", "precision": "fp32"}
    t_lenet = doc["lenet"]["epoch_seconds"]
    assert t_lenet == doc["lenet"]["epochs"][1]["seconds"] and doc["lenet"]["epoch_time_rule"] == "epoch 2"
    assert doc["ratios"] == {"fake": pytest.approx(t_lenet / 0.5)}
    row = {r["framework"]: r for r in doc["comparison"]}["fake"]
    assert row["version"] == "9.9" and row["epoch_seconds"] == 0.5 and row["samples_per_s"] == 600
    assert row["training_seconds"] == pytest.approx(3 * 0.5 + 0.5)  # every epoch, the slow first one included
    epochs = doc["lenet"]["epochs"]
    assert doc["lenet"]["training_seconds"] == pytest.approx(epochs[0]["seconds"] + epochs[1]["seconds"])
    assert doc["comparison"][0]["training_seconds"] == doc["lenet"]["training_seconds"]
    assert f"{t_lenet / 0.5:.2f}x" in text
    assert len(row["core_round_trip_ns"]) == 2 and len(doc["comparison"][0]["core_round_trip_ns"]) == 1


@pytest.mark.filterwarnings("ignore:precision='bf16' runs on the reference loops:RuntimeWarning")
def test_bf16_run_asks_the_peers_for_their_mixed_precision(tmp_path, monkeypatch, capsys, restore_threads):
    _fake_peer(tmp_path, monkeypatch, "fake", seconds=0.5)
    out = tmp_path / "bf16.json"
    rc = cli.main(["--data", "synthetic", "--model", "coreml", "--limit", "300", "--epochs", "1", "--precision",
                   "bf16", "--compare", "fake", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = json.loads(out.read_text())
    assert doc["config"]["precision"] == "bf16" and doc["peers"]["fake"]["result"]["args"]["precision"] == "bf16"
    assert "bf16 dense layers and conv gradients" in text and "their own mixed precision" in text


def test_compare_with_a_failing_peer_exits_1(tmp_path, monkeypatch, capsys, restore_threads):
    _fake_peer(tmp_path, monkeypatch, "broken", fail=True)
    rc = cli.main(["--data", "synthetic", "--limit", "128", "--epochs", "1", "--compare", "broken",
                   "--threads", str(restore_threads)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAILED with exit status 3" in text and "something broke" in text
    assert re.search(r"broken\s+-\s+failed", text), text


def test_scaling_runs_every_batch_once_per_thread_count(rng, restore_threads):
    """measure_scaling: one epoch of steps at 1 thread and one at N, in alternating chunks, each chunk after one
    untimed step; the thread count is restored."""
    from lenet.bench.scaling import measure_scaling

    lenet.set_num_threads(2)
    images = rng.integers(0, 256, (640, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 640)
    lenet.seed(0)
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, lenet.optim.SGD(model.parameters(), lr=0.01), batch_size=64, captured=True,
                            log=None)
    result = measure_scaling(trainer, images, labels, threads=3, chunk=4)
    assert result["threads"] == [1, 3] and result["steps_per_count"] == 10 and result["chunk_steps"] == 4
    assert trainer.optimizer.steps == 2 * 10 + 2 * 3  # every batch at each count, plus one untimed step per chunk
    t1, t3 = result["epoch_seconds"]
    assert t1 > 0 and t3 > 0 and result["speedup"] == pytest.approx(t1 / t3)
    chunks = result["chunk_speedups"]  # chunks of 4, 4 and 2 steps
    assert len(chunks) == 3 and all(c > 0 for c in chunks)
    assert result["median_chunk_speedup"] == sorted(chunks)[1]
    assert lenet.get_num_threads() == 2
    with pytest.raises(ValueError, match="at least 2 threads"):
        measure_scaling(trainer, images, labels, threads=1)


def test_cli_scaling_reports_and_writes_json(tmp_path):
    out = tmp_path / "scaling.json"
    p = _bench(tmp_path, "--data", "synthetic", "--limit", "640", "--epochs", "1", "--threads", "2", "--scaling",
               "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    scaling = json.loads(out.read_text())["lenet"]["scaling"]
    assert scaling["threads"] == [1, 2] and scaling["steps_per_count"] == 10
    assert f"{scaling['speedup']:.2f}x" in p.stdout
    assert f"{scaling['median_chunk_speedup']:.2f}x the median of its 1 chunks (" in p.stdout
    assert len(scaling["core_round_trip_ns"]) == 2
    p = _bench(tmp_path, "--data", "synthetic", "--limit", "64", "--epochs", "1", "--threads", "1", "--scaling")
    assert p.returncode == 0 and "thread scaling: skipped (--threads 1)" in p.stdout, p.stdout + p.stderr
