"""Shared, framework-free helpers for the peer benchmark scripts.

``peer_torch.py`` and ``peer_tensorflow.py`` run in their own subprocesses,
started by ``python -m lenet.bench --compare ...``.  They must not import the
``lenet`` package (its C++ extension may not be built), so everything they share
lives here and depends on numpy and the standard library only.

Call order in a peer script::

    args = build_parser("torch").parse_args()
    pin_thread_env(args.threads)      # before the framework is imported
    import torch                      # ... framework code ...
    data = load_npz(args.data)
    for epoch, perm in enumerate(epoch_permutations(args.seed, n, args.epochs), 1): ...
    write_json(args.out, result)
"""

import argparse
import math
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

MODELS = ("lenet5", "coreml")
OPTIMIZERS = ("sgd", "adam")

# Parameter counts of the two graphs (identical in every framework).
PARAM_COUNTS = {"lenet5": 61706, "coreml": 585958}

# Adam hyper-parameters shared by both peers.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

EVAL_BATCH = 1000

# Batch-1 latency protocol: warm up, then time CALLS calls split into BATCHES
# equal batches; report the median of the per-batch mean times.
LAT_WARMUP = 200
LAT_CALLS = 2000
LAT_BATCHES = 5


def build_parser(framework):
    p = argparse.ArgumentParser(
        description="Train a LeNet on MNIST in %s (peer of lenet.bench)." % framework)
    p.add_argument("--data", required=True,
                   help="npz with x_train (N,1,28,28 float32 in [0,1]), y_train (int64), x_test, y_test")
    p.add_argument("--model", choices=MODELS, default="lenet5")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate: constant, or cosine decay to 0 over all steps (lenet's Trainer formula)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="L2 weight decay added to the gradient (PyTorch semantics) for sgd and adam")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result JSON here (stdout if omitted)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the framework's own mixed precision for training (PyTorch: autocast to bfloat16 on "
                        "the CPU; Keras: the mixed_bfloat16 policy), weights and optimiser in fp32")
    p.add_argument("--infer-latency", action="store_true",
                   help="also measure batch-1 inference latency after training")
    return p


def cosine_lr(base, step, total):
    """lr for update number `step` (0-based) of `total`: base * (1 + cos(pi * step / total)) / 2."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def total_steps(args, n_train):
    return args.epochs * -(-n_train // args.batch)


def pin_thread_env(threads):
    """Set thread env vars; must run before numpy-heavy work / framework import."""
    t = str(int(threads))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
              "TF_NUM_INTRAOP_THREADS"):
        os.environ[k] = t
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_npz(path):
    """Return dict of x_train, y_train, x_test, y_test with checked shapes/dtypes."""
    with np.load(path) as z:
        d = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for split in ("train", "test"):
        x, y = d["x_" + split], d["y_" + split]
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError("x_%s must be (N,1,28,28), got %s" % (split, x.shape))
        if y.shape != (x.shape[0],):
            raise ValueError("y_%s must be (%d,), got %s" % (split, x.shape[0], y.shape))
        d["x_" + split] = np.ascontiguousarray(x, dtype=np.float32)
        d["y_" + split] = np.ascontiguousarray(y, dtype=np.int64)
    return d


def epoch_permutations(seed, n, epochs):
    """Yield the per-epoch shuffles: rng = default_rng(seed); rng.permutation(n) each epoch."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(n)


def batch_slices(n, batch):
    """(start, stop) of each minibatch; the last partial batch is included."""
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]


def time_latency(fn, warmup=LAT_WARMUP, calls=LAT_CALLS, batches=LAT_BATCHES):
    """Time ``fn()``: warm up, then ``calls`` calls in ``batches`` equal batches.

    Returns a dict with median_us (median of the per-batch mean, microseconds),
    min_us, batch_means_us and the protocol parameters.
    """
    for _ in range(warmup):
        fn()
    per = max(1, calls // batches)
    means = []
    pc = time.perf_counter
    for _ in range(batches):
        t0 = pc()
        for _ in range(per):
            fn()
        means.append((pc() - t0) / per * 1e6)
    return {"median_us": statistics.median(means), "min_us": min(means),
            "batch_means_us": means, "warmup": warmup, "calls": per * batches,
            "batches": batches}


def base_result(framework, version, args, method):
    return {
        "framework": framework, "version": version, "threads": args.threads,
        "model": args.model, "batch": args.batch, "optimizer": args.optimizer,
        "lr": args.lr, "momentum": args.momentum if args.optimizer == "sgd" else None,
        "weight_decay": args.weight_decay, "seed": args.seed, "method": method, "precision": args.precision,
        "params": None, "epochs": [], "infer_latency_us": None, "tflite": None,
        "python": platform.python_version(), "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        # 1/5/15-min load averages (include this process): a start value well
        # above 0 means another job shared the CPUs and timings are suspect.
        "loadavg_start": _loadavg(),
    }


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def log_epoch(framework, rec, total):
    print("[%s] epoch %d/%d  %.2fs  loss %.4f  test_acc %.4f"
          % (framework, rec["epoch"], total, rec["seconds"], rec["loss"], rec["test_acc"]),
          file=sys.stderr, flush=True)


def log(framework, msg):
    print("[%s] %s" % (framework, msg), file=sys.stderr, flush=True)


def write_json(path, result):
    result.setdefault("loadavg_end", _loadavg())
    text = json.dumps(result, indent=2)
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    else:
        print(text)
