"""python -m lenet.bench: train a LeNet on MNIST and report epoch time, samples/s and GFLOP/s, optionally side by
side with PyTorch and TensorFlow training the same graph on the same data with the same settings.

    python -m lenet.bench                                   # LeNet-5, 3 epochs, SGD 0.05 momentum 0.9, batch 64
    python -m lenet.bench --model coreml                    # the MNIST-CoreML-Training graph, Adam 1e-3, batch 128
    python -m lenet.bench --compare torch,tensorflow --json result.json

Exit status: 0 on success; 2 for bad arguments, an unavailable --isa, or MNIST missing from a --data folder;
1 when a compared framework that is installed failed (the others and the JSON are still reported).
A compared framework that is not installed is reported as such and skipped.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import lenet
from lenet import _core
from lenet import data as ldata
from lenet.capture import PRECISIONS
from lenet.models import MODELS

from . import (PEER_ALIASES, PEERS, CpuMeter, epoch_time, loadavg, machine_info, peer_available, peer_script,
               peer_version, usable_cores, write_json_atomic)
from .flops import count_flops
from .scaling import measure_scaling

PROG = "python -m lenet.bench"

# The published set-ups of the two graphs: LeNet-5 with SGD + momentum, the MNIST-CoreML-Training graph with
# Adam 1e-3 and batch 128.  3 epochs: the reported epoch time is then the median of two warm epochs.
MODEL_DEFAULTS = {
    "lenet5": {"epochs": 3, "batch": 64, "optimizer": "sgd"},
    "coreml": {"epochs": 3, "batch": 128, "optimizer": "adam"},
}
LR_DEFAULTS = {"sgd": 0.05, "adam": 1e-3}
PEAK_RUNS, PEAK_SECONDS = 5, 0.1  # the FMA peak: the best of PEAK_RUNS loops of PEAK_SECONDS each
BUSY_CORES = 0.25  # other processes using more CPU than this (in cores) during a run disturb its timing
MODEL_TITLES = {"lenet5": "LeNet-5", "coreml": "MNIST-CoreML-Training graph"}


class BenchError(Exception):
    """A user-facing error: printed as `error: ...`, exit status 2, no traceback."""


# ---- arguments ---------------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _momentum(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _peer_list(text: str) -> list:
    names = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        name = PEER_ALIASES.get(name, name)
        if name not in PEERS:
            raise argparse.ArgumentTypeError(
                f"unknown framework {raw.strip()!r} (choose from {', '.join(PEERS)}; comma-separated)")
        if name not in names:
            names.append(name)
    if not names:
        raise argparse.ArgumentTypeError(f"no framework named (choose from {', '.join(PEERS)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a LeNet on MNIST with lenet's kernels and report, per epoch, time, samples/s, "
                    "GFLOP/s, training loss and test accuracy; optionally compare with PyTorch / TensorFlow "
                    "(each in its own subprocess, same graph, data, hyper-parameters, seed and threads).",
        epilog="FLOPs: multiply-adds of the conv and linear layers (x2), forward + backward (dW of every layer, "
               "dX of all but the first); bias, ReLU, pooling and the loss are not counted. Epoch time in the "
               "comparison: median of the epochs after the first (warm-up), or the only epoch.")
    p.add_argument("--model", choices=sorted(MODELS), default="lenet5",
                   help="lenet5 (default) or coreml (the MNIST-CoreML-Training graph)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs (default 3)")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="minibatch size (default 64 for lenet5, 128 for coreml)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="default: sgd for lenet5, adam for coreml (the published set-ups)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default 0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--momentum", type=_momentum, default=0.9, help="SGD momentum (default 0.9; ignored by adam)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="learning rate over the run: cosine decay to 0 (default for sgd) or constant (default for "
                        "adam, the MNIST-CoreML-Training set-up)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help=f"threads for lenet and the peers (default: all usable cores, here {usable_cores()})")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the shuffles (default 0)")
    p.add_argument("--isa", metavar="NAME", default=None,
                   help="force an instruction set: reference, avx2, avx512 or neon, as this CPU allows "
                        "(default: the best this CPU runs)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder with the MNIST files (it must hold them); 'synthetic' for the built-in synthetic "
                        "set. Default: $LENET_MNIST_DIR, else the lenet cache (downloading into it), else the "
                        "synthetic set with a warning")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only (quick runs); the test set stays whole")
    p.add_argument("--compare", type=_peer_list, default=[], metavar="LIST",
                   help=f"comma-separated frameworks to run the same training in: {', '.join(PEERS)}")
    p.add_argument("--json", metavar="FILE", default=None, help="write every figure to FILE (JSON)")
    p.add_argument("--step", choices=("captured", "autograd"), default="captured",
                   help="captured (default): each training step's forward, loss and backward as one C++ call "
                        "(lenet.capture); autograd: one Python call per op")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), or bf16: the dense layers' products and the later convolutions' gradients "
                        "with operands rounded to bf16 and fp32 "
                        "sums, on AMX or AVX512-BF16 where the CPU has them (captured step only); the peers then train in their own "
                        "mixed precision (PyTorch autocast to bfloat16, Keras mixed_bfloat16)")
    p.add_argument("--latency", action="store_true",
                   help="also measure batch-1 inference latency from Python on 1 thread (lenet, and the peers: "
                        "PyTorch eager, the TensorFlow Lite interpreter fp32 and int8)")
    p.add_argument("--scaling", action="store_true",
                   help="also measure thread scaling in this run: one epoch of training steps at 1 thread and one at "
                        "--threads, alternating every few steps, and report the speedup over the epoch and the median "
                        "of its chunks' speedups")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="draw epoch time per framework and the loss / test-accuracy curves as a PNG (needs matplotlib)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line and fill in the model-dependent defaults."""
    args = build_parser().parse_args(argv)
    defaults = MODEL_DEFAULTS[args.model]
    if args.epochs is None:
        args.epochs = defaults["epochs"]
    if args.batch is None:
        args.batch = defaults["batch"]
    if args.optimizer is None:
        args.optimizer = defaults["optimizer"]
    if args.lr is None:
        args.lr = LR_DEFAULTS[args.optimizer]
    if args.schedule is None:
        args.schedule = "cosine" if args.optimizer == "sgd" else "constant"
    if args.threads is None:
        args.threads = usable_cores()
    if args.precision != "fp32" and args.step != "captured":
        build_parser().error(f"--precision {args.precision} needs the captured step (the autograd path is fp32)")
    if args.precision != "fp32" and args.latency:
        build_parser().error("--latency measures fp32 inference: run it with --precision fp32")
    return args


# ---- data --------------------------------------------------------------------------------------------------------
def load_data(args):
    """(MNIST dataclass, note): note says why the synthetic set is used, else None."""
    if args.data is not None and args.data.lower() == "synthetic":
        return ldata.synthetic_digits(60000, 10000), "requested with --data synthetic"
    try:
        return ldata.load_mnist(args.data, download=not args.no_download), None
    except ldata.MNISTNotFound as exc:
        if args.data is not None:
            raise BenchError(f"--data {args.data}: {exc}") from None
        note = (f"MNIST not found ({exc.reason}; looked in {exc.folder}); set {ldata.ENV_MNIST_DIR} or use "
                f"--data DIR")
        print(f"warning: {note}; using the built-in SYNTHETIC digit set: accuracy figures are not MNIST "
              "figures", file=sys.stderr, flush=True)
        return ldata.synthetic_digits(60000, 10000), note
    except (ldata.IDXError, OSError) as exc:
        raise BenchError(f"cannot read MNIST: {exc}") from None


# ---- formatting --------------------------------------------------------------------------------------------------
def _say(*parts) -> None:
    print(*parts, flush=True)


def format_table(header, rows, align=None) -> str:
    """A plain text table; `align` is a string of 'l'/'r' per column (default: first left, the rest right)."""
    cols = len(header)
    align = align or "l" + "r" * (cols - 1)
    cells = [list(map(str, header))] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(cols)]

    def line(r):
        out = []
        for i, c in enumerate(r):
            out.append(c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _cores(cpu, key="others_cores") -> str:
    return "?" if not cpu else f"{cpu[key]:.2f}"


def _ratio(x) -> str:
    return "" if x is None else f"{x:.2f}x"


def round_trip_ns():
    """The core-to-core round trip now, in ns (None where a second thread could not run alongside): two-thread
    training waits on it at every synchronisation and for every weight the other core updated, so where it is
    high (a shared machine's slow phases) two-thread times are slower although one thread keeps its speed."""
    time.sleep(0.005)  # first let the thread pool's workers stop spinning (they spin well under a millisecond)
    ns = _core.core_round_trip_ns()
    return None if math.isnan(ns) else ns


PHASE_SPREAD = 2.0  # the round trip's highest / lowest sample in one run above which the machine changed phase


def round_trip_range(samples):
    """(lowest, highest) of the round-trip samples that could be taken (None where one could not), or None."""
    values = [v for v in samples if v is not None]
    return (min(values), max(values)) if values else None


def phase_warning(rt_range):
    """A warning when the lowest and highest core-to-core round trip of one run (round_trip_range) differ by more
    than PHASE_SPREAD: the machine changed phase during the run, and two-thread timings from its slow phase are
    slower; else None."""
    if rt_range is None or rt_range[1] <= PHASE_SPREAD * rt_range[0]:
        return None
    return (f"WARNING: the core-to-core round trip ranged from {rt_range[0]:.0f} to {rt_range[1]:.0f} ns during this "
            f"run: the machine changed phase, and two-thread timings taken while it was high are slower (see the "
            f"c2c ns columns); compare runs of one phase.")


def _ns(samples) -> str:
    """The worst (highest) of some round-trip samples, for a table cell."""
    rt_range = round_trip_range(samples)
    return f"{rt_range[1]:.0f}" if rt_range else "?"


# ---- lenet -------------------------------------------------------------------------------------------------------
def make_trainer(args):
    """(model, Trainer) for the configuration, initialised from args.seed."""
    lenet.seed(args.seed)
    model = MODELS[args.model]()
    if args.optimizer == "sgd":
        opt = lenet.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    else:
        opt = lenet.optim.Adam(model.parameters(), lr=args.lr)
    trainer = lenet.Trainer(model, opt, batch_size=args.batch, seed=args.seed, log=None,
                            captured=args.step == "captured", precision=args.precision,
                            lr_schedule=None if args.schedule == "constant" else args.schedule)
    return model, trainer


def run_lenet(args, x_train, y_train, x_test, y_test, flops, peak) -> list:
    """Train and evaluate; print and return the per-epoch records. `peak` is the measured FMA peak (GFLOP/s)."""
    model, trainer = make_trainer(args)
    n = len(x_train)
    trainer.plan_schedule(args.epochs, n)
    header = ["epoch", "time (s)", "samples/s", "GFLOP/s", "% peak", "outside", "train loss", "test acc",
              "eval (s)", "others", "c2c ns"]
    widths = [5, 9, 10, 8, 6, 7, 10, 8, 8, 6, 6]
    _say("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    records = []
    for epoch in range(1, args.epochs + 1):
        meter = CpuMeter()
        kernel_before = _core.kernel_seconds()
        r = trainer.train_epoch(x_train, y_train)
        kernel_s = _core.kernel_seconds() - kernel_before
        cpu = meter.stop()
        c2c = round_trip_ns()  # right after the epoch: the phase it ended in
        t0 = time.perf_counter()
        ev = trainer.evaluate(x_test, y_test)
        eval_s = time.perf_counter() - t0
        rec = {"epoch": epoch, "seconds": r["seconds"], "samples_per_s": r["samples_per_s"],
               "gflops": flops.gflops(n, r["seconds"]), "loss": r["loss"], "test_acc": ev["accuracy"],
               "test_loss": ev["loss"], "eval_seconds": eval_s, "cpu": cpu, "kernel_seconds": kernel_s,
               "outside_kernels": 1.0 - kernel_s / r["seconds"], "core_round_trip_ns": c2c}
        records.append(rec)
        rec["peak_share"] = rec["gflops"] / peak
        cells = [str(epoch), f"{rec['seconds']:.2f}", f"{rec['samples_per_s']:,.0f}", f"{rec['gflops']:.2f}",
                 f"{100 * rec['peak_share']:.0f}%", f"{100 * rec['outside_kernels']:.0f}%", f"{rec['loss']:.4f}",
                 f"{rec['test_acc']:.4f}", f"{eval_s:.2f}", _cores(cpu), _ns([c2c])]
        _say("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return records, model


def measure_latency(model, image, calibration=None) -> dict:
    """Batch-1 inference (one image as float32 in [0, 1] in, logits out as numpy) from Python on 1 thread through
    the inference API (lenet.Model.logits: one engine call), with the peers' protocol (peer_common.time_latency).
    With calibration images, also the int8 model (lenet.quantize) under "int8"."""
    from .peer_common import time_latency

    threads = lenet.get_num_threads()
    lenet.set_num_threads(1)
    x = ldata.to_float(image)
    predictor = lenet.Model(model)
    try:
        result = time_latency(lambda: predictor.logits(x))
        if calibration is not None:
            quantized = lenet.quantize(predictor, calibration)
            result["int8"] = time_latency(lambda: quantized.logits(x))
        return result
    finally:
        lenet.set_num_threads(threads)


# ---- peers -------------------------------------------------------------------------------------------------------
def write_peer_data(path, x_train, y_train, x_test, y_test) -> None:
    """The npz the peers read: float32 NCHW images / 255 (exactly lenet's input) and int64 labels."""
    np.savez(path, x_train=ldata.to_float(x_train), y_train=y_train.astype(np.int64),
             x_test=ldata.to_float(x_test), y_test=y_test.astype(np.int64))


def peer_command(peer, args, npz, out_json) -> list:
    # Run as a script (which peer_*.py support), not with -m: `-m lenet.bench.peer_x` would import the lenet
    # package and its compiled module (and start its thread pool) in the peer's process.
    return [sys.executable, peer_script(peer), "--data", npz, "--model", args.model, "--epochs", str(args.epochs),
            "--batch", str(args.batch), "--lr", repr(args.lr), "--optimizer", args.optimizer,
            "--momentum", repr(args.momentum), "--schedule", args.schedule, "--threads", str(args.threads),
            "--seed", str(args.seed), "--precision", args.precision, *(["--infer-latency"] if args.latency else []),
            "--out", out_json]


def run_peer(peer, args, npz, workdir) -> dict:
    """Run one peer in a subprocess, relaying its progress lines; returns {"status", ...}."""
    out_json = os.path.join(workdir, f"{peer.name}.json")
    cmd = peer_command(peer, args, npz, out_json)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    c2c_before = round_trip_ns()
    start, meter = time.perf_counter(), CpuMeter()
    tail = collections.deque(maxlen=30)
    prefix = f"[{peer.name}]"
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                          errors="replace", bufsize=1) as proc:
        _say(f"  [{peer.name}] started (pid {proc.pid}): importing {peer.module}, then {args.epochs} epoch(s) ...")
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                if line.startswith(prefix):
                    _say("  " + line)
        except BaseException:  # interrupted (Ctrl-C): do not leave it running
            proc.kill()
            raise
        rc = proc.wait()
    wall, cpu = time.perf_counter() - start, meter.stop()  # after wait(): the child's CPU time counts as ours
    result = {"status": "ok", "wall_seconds": wall, "command": cmd, "returncode": rc, "cpu": cpu,
              "core_round_trip_ns": [c2c_before, round_trip_ns()]}
    if rc != 0:
        result.update(status="failed", output_tail=list(tail))
        _say(f"  [{peer.name}] FAILED with exit status {rc} after {wall:.1f} s; its last output:")
        for line in list(tail)[-12:]:
            _say("    | " + line)
        return result
    try:
        with open(out_json, encoding="utf-8") as f:
            res = json.load(f)
        if not res.get("epochs"):
            raise ValueError("no epochs in its result")
    except (OSError, ValueError) as exc:
        result.update(status="failed", error=f"unreadable result {out_json}: {exc}", output_tail=list(tail))
        _say(f"  [{peer.name}] FAILED: unreadable result ({exc})")
        return result
    result["result"] = res
    _say(f"  [{peer.name}] done in {wall:.1f} s (wall, including start-up); it used {_cores(cpu, 'own_cores')} "
         f"cores, other processes {_cores(cpu)}")
    return result


# ---- main --------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)  # argparse: message + exit status 2 on bad arguments
    args.argv = argv
    try:
        return _run(args)
    except BenchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(args) -> int:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if args.plot:  # fail now rather than after the whole run
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BenchError("--plot needs matplotlib (pip install matplotlib)") from None
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise BenchError(f"--plot {args.plot}: folder {folder} does not exist or is not writable")
    if args.json:  # fail now rather than after the whole run
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise BenchError(f"--json {args.json}: folder {folder} does not exist or is not writable")
    if args.isa is not None:
        try:
            lenet.set_isa(args.isa)
        except ValueError as exc:
            raise BenchError(str(exc)) from None
    try:
        lenet.set_num_threads(args.threads)
    except ValueError as exc:
        raise BenchError(f"--threads {args.threads}: {exc}") from None
    kernels = lenet.kernels()
    machine = machine_info()

    mnist, synthetic_note = load_data(args)
    x_train, y_train = mnist.train_images, mnist.train_labels
    if args.limit is not None and args.limit < len(x_train):
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = mnist.test_images, mnist.test_labels
    n_train, n_test = len(x_train), len(x_test)

    lenet.seed(args.seed)
    flops = count_flops(MODELS[args.model]())
    n_params = MODELS[args.model]().num_parameters()

    # ---- header
    title = MODEL_TITLES[args.model]
    _say(f"lenet {lenet.__version__} benchmark: {title} ({args.model}), {n_params:,} parameters")
    _say(f"  instruction set : {kernels['isa']} (chosen by {kernels['source']}; available: "
         f"{', '.join(kernels['available'])})")
    _say(f"  threads         : {lenet.get_num_threads()} (usable cores: {machine['usable_cores']}, "
         f"os.cpu_count: {machine['cpu_count']})")
    _say(f"  cpu             : {machine['cpu_model']}; features: {' '.join(kernels['cpu_features'])}")
    _say(f"  python / numpy  : {platform.python_version()} / numpy {np.__version__}")
    if mnist.source == "mnist":
        _say(f"  data            : MNIST from {mnist.path}: {n_train:,} training images"
             f"{' (--limit)' if n_train < len(mnist.train_images) else ''}, {n_test:,} test images")
    else:
        _say(f"  data            : *** SYNTHETIC digit set, NOT MNIST *** ({synthetic_note}): {n_train:,} training, "
             f"{n_test:,} test images; accuracy figures are not MNIST figures")
    opt_desc = (f"SGD lr {args.lr:g} momentum {args.momentum:g}" if args.optimizer == "sgd"
                else f"Adam lr {args.lr:g}") + f", {args.schedule} schedule"
    precision = ("fp32" if args.precision == "fp32" else
                 f"bf16 dense layers and conv gradients ({kernels['bf16']['isa']} kernels; the peers in their own "
                 "mixed precision)")
    _say(f"  training        : {args.epochs} epoch(s), batch {args.batch}, {opt_desc}, seed {args.seed}, "
         f"{args.step} step, {precision}")
    _say(f"  FLOPs/sample    : forward {flops.forward:,} + backward {flops.backward:,} = {flops.step:,} per "
         f"training step (multiply-add = 2; conv and linear only)")
    # The best of a few short runs: on a shared VM one run can land in a moment of lower clock (one 0.3 s run gave
    # 434 GFLOP/s where the others give 520-540), which would inflate every '% peak' of the run.
    peak = max(_core.fma_peak_gflops(PEAK_SECONDS) for _ in range(PEAK_RUNS))
    _say(f"  peak            : {peak:.0f} GFLOP/s measured now ({kernels['isa']} FMA loop on {lenet.get_num_threads()} "
         f"thread(s), best of {PEAK_RUNS} runs of {PEAK_SECONDS} s); '% peak' = achieved / this, 'outside' = share "
         f"of epoch time not inside kernels"
         + ("; in bf16 the products on AMX or AVX512-BF16 are not bound by this fp32 peak" if args.precision == "bf16" else ""))
    meter = CpuMeter()
    time.sleep(0.5)
    idle = meter.stop()
    la = loadavg()
    if idle is not None:
        machine["others_cores_before"] = idle["others_cores"]
        busy = (": the machine is busy, timings will be disturbed" if idle["others_cores"] > BUSY_CORES else "")
        _say(f"  other processes : {idle['others_cores']:.2f} of {machine['cpu_count']} cores busy just before the "
             f"run{busy}" + (f" (load average {' '.join(f'{v:.2f}' for v in la)})" if la else ""))
    machine["core_round_trip_ns_before"] = c2c = round_trip_ns()
    _say(f"  core-to-core    : {_ns([c2c])} ns round trip of a cache line between two threads, measured now; also "
         f"after each epoch ('c2c ns'). Two-thread steps wait on it: where it is high (a shared machine's slow "
         f"phases) they slow down")
    _say("")

    # ---- lenet
    meter = CpuMeter()
    records, model = run_lenet(args, x_train, y_train, x_test, y_test, flops, peak)
    lenet_cpu = meter.stop()
    t_lenet, how = epoch_time([r["seconds"] for r in records])
    data_tag = "MNIST" if mnist.source == "mnist" else "SYNTHETIC data, not MNIST"
    # the machine's load during the epochs the reported time comes from (the worst of them)
    timed = [r["cpu"] for r in (records[1:] if len(records) >= 2 else records) if r["cpu"]]
    timed_cpu = max(timed, key=lambda c: c["others_cores"]) if timed else None
    timed_records = records[1:] if len(records) >= 2 else records
    outside = sum(r["seconds"] - r["kernel_seconds"] for r in timed_records) / sum(r["seconds"] for r in timed_records)
    training = sum(r["seconds"] for r in records)  # every epoch's training, evaluation left out
    gflops = flops.gflops(n_train, t_lenet)
    _say(f"lenet: {t_lenet:.2f} s per epoch ({how}), {n_train / t_lenet:,.0f} samples/s, "
         f"{gflops:.2f} GFLOP/s ({100 * gflops / peak:.0f}% of the measured peak), {100 * outside:.0f}% of the time "
         f"outside kernels, final test accuracy {records[-1]['test_acc']:.4f} ({data_tag}); {len(records)} "
         f"epoch(s) of training in {training:.1f} s")
    _say("(others: CPU cores used by other processes meanwhile, from /proc/stat; c2c ns: core-to-core round trip "
         "right after the epoch)")
    if timed_cpu and timed_cpu["others_cores"] > BUSY_CORES:
        _say(f"WARNING: other processes used up to {timed_cpu['others_cores']:.2f} cores during the epochs timed "
             f"({how}): lenet's time is inflated; re-run on a quiet machine.")

    latency = measure_latency(model, x_test[:1], x_train) if args.latency else None
    if latency:
        _say(f"lenet batch-1 inference from Python, 1 thread: {latency['median_us']:.1f} us (median of "
             f"{latency['batches']} batches of {latency['calls'] // latency['batches']} calls); int8 "
             f"(lenet.quantize): {latency['int8']['median_us']:.1f} us")

    scaling = None
    if args.scaling:
        if args.threads < 2:
            _say("thread scaling: skipped (--threads 1)")
        else:
            _, fresh = make_trainer(args)  # its own model: the trained one stays as reported
            fresh.plan_schedule(1, n_train)
            c2c_before = round_trip_ns()
            scaling = measure_scaling(fresh, x_train, y_train, args.threads)
            scaling["core_round_trip_ns"] = [c2c_before, round_trip_ns()]
            t1, tn = scaling["epoch_seconds"]
            _say(f"thread scaling: {t1:.2f} s per epoch on 1 thread, {tn:.2f} s on {args.threads}: "
                 f"{scaling['speedup']:.2f}x over the epoch, {scaling['median_chunk_speedup']:.2f}x the median of its "
                 f"{len(scaling['chunk_speedups'])} chunks ({scaling['rule']}; core-to-core round trip "
                 f"{' and '.join(_ns([v]) for v in scaling['core_round_trip_ns'])} ns before and after)")

    rows = [{"framework": "lenet", "version": lenet.__version__, "status": "ok", "epoch_seconds": t_lenet,
             "epoch_time_rule": how, "training_seconds": training, "samples_per_s": n_train / t_lenet,
             "gflops": gflops, "test_acc": records[-1]["test_acc"],
             "lenet_over_peer": 1.0, "cpu": timed_cpu,
             "core_round_trip_ns": [r["core_round_trip_ns"] for r in timed_records]}]
    peers, failed = {}, False

    # ---- peers
    if args.compare:
        _say("")
        _say(f"comparison: {', '.join(args.compare)}, each in its own subprocess, one after the other, with the "
             f"same graph, data, hyper-parameters, seed and {args.threads} thread(s)")
        available = {name: peer_available(PEERS[name]) for name in args.compare}
        for name, ok in available.items():
            if not ok:
                peers[name] = {"status": "not installed"}
                _say(f"  [{name}] not installed (no module {PEERS[name].module!r} for {sys.executable}): skipped")
        if any(available.values()):
            with tempfile.TemporaryDirectory(prefix="lenet-bench-") as workdir:
                npz = os.path.join(workdir, "data.npz")
                write_peer_data(npz, x_train, y_train, x_test, y_test)
                for name in args.compare:
                    if available[name]:
                        peers[name] = run_peer(PEERS[name], args, npz, workdir)
        for name in args.compare:
            info = peers[name]
            row = {"framework": name, "status": info["status"], "version": None}
            if info["status"] == "ok":
                res = info["result"]
                secs, rule = epoch_time([e["seconds"] for e in res["epochs"]])
                row.update(version=res.get("version"), epoch_seconds=secs, epoch_time_rule=rule,
                           training_seconds=sum(e["seconds"] for e in res["epochs"]),
                           samples_per_s=n_train / secs, gflops=flops.gflops(n_train, secs),
                           test_acc=res["epochs"][-1].get("test_acc"), lenet_over_peer=t_lenet / secs,
                           cpu=info.get("cpu"), core_round_trip_ns=info.get("core_round_trip_ns"))
            else:
                failed = failed or info["status"] == "failed"
                row["version"] = peer_version(PEERS[name])
            rows.append(row)

        _say("")
        mixed = (", bf16 (lenet: its dense layers; the peers: their own mixed precision, PyTorch autocast and Keras "
                 "mixed_bfloat16)" if args.precision == "bf16" else "")
        _say(f"{title}, {data_tag}, {n_train:,} training images, batch {args.batch}, {opt_desc}, "
             f"{args.threads} thread(s), {args.epochs} epoch(s){mixed}; epoch time = {how}")
        table = []
        for r in rows:
            if r["status"] == "ok":
                table.append([r["framework"], r["version"] or "?", f"{r['epoch_seconds']:.2f}",
                              f"{r['samples_per_s']:,.0f}", f"{r['gflops']:.2f}",
                              "" if r["test_acc"] is None else f"{r['test_acc']:.4f}", _ratio(r["lenet_over_peer"]),
                              _cores(r.get("cpu")), _ns(r.get("core_round_trip_ns") or [])])
            else:
                table.append([r["framework"], r["version"] or "-", r["status"], "", "", "", "", "", ""])
        _say(format_table(["framework", "version", "epoch time (s)", "samples/s", "GFLOP/s", "test acc",
                           "lenet/peer time", "others", "c2c ns"], table, "llrrrrrrr"))
        _say("lenet/peer time < 1: lenet is faster (0.50x = lenet takes half the time); "
             "> 1: the peer is faster.")
        _say(f"others: cores used by other processes (from /proc/stat) during the timed epochs for lenet, during "
             f"the whole subprocess for a peer; above {BUSY_CORES} the machine was shared and that time is "
             f"inflated. c2c ns: the highest core-to-core round trip sampled after each timed epoch for lenet, before "
             f"and after the subprocess for a peer.")
        if latency:
            _say("")
            _say("batch-1 inference latency, 1 thread (median, microseconds)")
            # Each peer row is compared with lenet at the same precision (int8 rows with lenet int8).
            fp32_us, int8_us = latency["median_us"], latency["int8"]["median_us"]
            lat_rows = [["lenet", "fp32, Python", f"{fp32_us:.1f}", ""],
                        ["lenet", "int8, Python", f"{int8_us:.1f}", ""]]
            for name in args.compare:
                for variant, us in ((peers[name].get("result") or {}).get("infer_latency_us") or {}).items():
                    if "1thread" in variant or variant.startswith("tflite") or name == "tensorflow":
                        mine = int8_us if "int8" in variant else fp32_us
                        lat_rows.append([name, variant, f"{us:.1f}", _ratio(mine / us)])
            _say(format_table(["framework", "variant", "latency (us)", "lenet/peer (same precision)"], lat_rows,
                              "llrr"))
        disturbed = [r["framework"] for r in rows if r.get("cpu") and r["cpu"]["others_cores"] > BUSY_CORES]
        if disturbed:
            _say(f"WARNING: other work ran during {', '.join(disturbed)}: those times (and the ratios) are not "
                 f"clean; re-run on a quiet machine.")

    samples = [machine["core_round_trip_ns_before"]] + [r["core_round_trip_ns"] for r in records]
    samples += (scaling or {}).get("core_round_trip_ns", [])
    for info in peers.values():
        samples += info.get("core_round_trip_ns", [])
    rt_range = round_trip_range(samples)
    warning = phase_warning(rt_range)
    if warning:
        _say(warning)

    # ---- JSON
    if args.json or args.plot:
        versions = {"python": platform.python_version(), "numpy": np.__version__, "lenet": lenet.__version__}
        for name in args.compare:
            res = peers[name].get("result") or {}
            versions[name] = res.get("version") or peer_version(PEERS[name])
        machine["loadavg_end"] = loadavg()
        doc = {
            "schema": "lenet.bench/1",
            "started": started,
            "command": [sys.executable, "-m", "lenet.bench"] + args.argv,
            "config": {"model": args.model, "epochs": args.epochs, "batch": args.batch,
                       "optimizer": args.optimizer, "lr": args.lr, "schedule": args.schedule, "step": args.step,
                       "precision": args.precision,
                       "momentum": args.momentum if args.optimizer == "sgd" else None,
                       "threads": args.threads, "seed": args.seed, "isa": kernels["isa"],
                       "isa_forced": args.isa, "limit": args.limit, "compare": args.compare},
            "machine": machine,
            "core_round_trip_ns_range": list(rt_range or (None, None)),
            "versions": versions,
            "kernels": kernels,
            "data": {"source": mnist.source, "synthetic": mnist.source != "mnist", "note": synthetic_note,
                     "path": mnist.path, "n_train": n_train, "n_test": n_test},
            "model": {"name": args.model, "title": title, "parameters": n_params},
            "flops": flops.as_dict(),
            "lenet": {"epochs": records, "epoch_seconds": t_lenet, "epoch_time_rule": how, "training_seconds": training,
                      "cpu_timed_epochs": timed_cpu, "cpu_whole_run": lenet_cpu,
                      "samples_per_s": n_train / t_lenet, "gflops": gflops,
                      "peak_gflops": peak, "peak_share": gflops / peak,
                      "outside_kernels": outside, "final_test_acc": records[-1]["test_acc"],
                      "infer_latency_us": latency, "scaling": scaling},
            "peers": peers,
            "comparison": rows,
            "ratios": {r["framework"]: r["lenet_over_peer"] for r in rows[1:] if r["status"] == "ok"},
        }
        if args.json:
            try:
                write_json_atomic(args.json, doc)
            except OSError as exc:
                raise BenchError(f"cannot write --json {args.json}: {exc}") from None
            _say(f"\nwrote {args.json}")
        if args.plot:
            from .plot import plot

            plot(doc, args.plot)
            _say(f"wrote {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
