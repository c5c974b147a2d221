"""PyTorch peer for ``lenet.bench --compare``: plain eager training loop.

Run as ``python -m lenet.bench.peer_torch ...`` or ``python lenet/bench/peer_torch.py ...``.
"""

import os
import random
import sys
import time

if __package__:
    from . import peer_common as pc
else:  # run as a file path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_common as pc

import numpy as np

FW = "torch"


def build_model(name, nn):
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))
    if name == "coreml":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 6 * 6, 500), nn.ReLU(),
            nn.Linear(500, 10))
    raise ValueError(name)


def evaluate(torch, model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for a, b in pc.batch_slices(x.shape[0], pc.EVAL_BATCH):
            correct += int((model(x[a:b]).argmax(1) == y[a:b]).sum())
    model.train()
    return correct / x.shape[0]


def measure_latency(torch, model, threads):
    """Batch-1 eager fp32 latency, at ``threads`` threads and at 1 thread."""
    model.eval()
    x1 = torch.rand(1, 1, 28, 28)
    detail = {}
    with torch.no_grad():
        for key, t in (("eager_fp32", threads), ("eager_fp32_1thread", 1)):
            if key == "eager_fp32_1thread" and threads == 1:
                continue
            torch.set_num_threads(t)
            r = pc.time_latency(lambda: model(x1))
            r["threads"] = t
            detail[key] = r
    torch.set_num_threads(threads)
    model.train()
    return detail


def main(argv=None):
    args = pc.build_parser(FW).parse_args(argv)
    pc.pin_thread_env(args.threads)

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only possible before any parallel work)
        pass
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    d = pc.load_npz(args.data)
    x_train = torch.from_numpy(d["x_train"])
    y_train = torch.from_numpy(d["y_train"])
    x_test = torch.from_numpy(d["x_test"])
    y_test = torch.from_numpy(d["y_test"])
    n = x_train.shape[0]

    model = build_model(args.model, nn)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pc.PARAM_COUNTS[args.model], (args.model, n_params)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=pc.ADAM_BETAS,
                               eps=pc.ADAM_EPS, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()  # softmax cross-entropy on logits, mean over batch

    res = pc.base_result(FW, torch.__version__, args, "eager")
    res["params"] = n_params
    res["n_train"], res["n_test"] = n, int(x_test.shape[0])
    res["torch_threads"] = torch.get_num_threads()
    res["torch_interop_threads"] = torch.get_num_interop_threads()
    slices = pc.batch_slices(n, args.batch)

    model.train()
    step, total = 0, pc.total_steps(args, n)
    for epoch, perm in enumerate(pc.epoch_permutations(args.seed, n, args.epochs), 1):
        perm_t = torch.from_numpy(perm)
        loss_sum = 0.0
        t0 = time.perf_counter()
        for a, b in slices:
            idx = perm_t[a:b]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            if args.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = pc.cosine_lr(args.lr, step, total)
            opt.step()
            step += 1
            loss_sum += loss.item() * (b - a)
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch, "seconds": secs, "loss": loss_sum / n,
               "test_acc": evaluate(torch, model, x_test, y_test)}
        res["epochs"].append(rec)
        pc.log_epoch(FW, rec, args.epochs)

    if args.infer_latency:
        detail = measure_latency(torch, model, args.threads)
        res["infer_latency_us"] = {k: v["median_us"] for k, v in detail.items()}
        res["infer_latency_detail"] = detail
        pc.log(FW, "batch-1 latency (median us): " + ", ".join(
            "%s %.1f" % kv for kv in res["infer_latency_us"].items()))

    pc.write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
