"""python -m lenet.train: train a LeNet on MNIST (or fine-tune a trained one, e.g. on Fashion-MNIST) into a model
file, with a checkpoint after every epoch that --resume continues to the same final weights.

    python -m lenet.train --model lenet5 --epochs 10 --out mnist.lenet
    python -m lenet.train --out mnist.lenet --resume             # continue an interrupted run
    python -m lenet.train --finetune mnist.lenet --freeze 0-5 --new-head --dataset fashion-mnist \\
        --epochs 2 --out fashion.lenet                             # train the dense layers on clothes

The checkpoint is the model file itself (--out, written atomically after each epoch): graph, weights and the test
accuracy, plus what continuing needs (optimiser buffers as extra tensors; epoch, optimiser steps, learning rate,
the shuffle generator's state, the schedule's total steps and the hyper-parameters as metadata). It loads with
lenet.load and python -m lenet.predict like any model file.

Exit status: 0 on success (and for --stop-after); 2 for bad arguments, missing data, or a checkpoint that does not
match the command line; 130 when interrupted (the last checkpoint stays intact).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

import lenet
from lenet import data as ldata
from lenet import model_file, optim
from lenet.bench.__main__ import LR_DEFAULTS, MODEL_DEFAULTS, _momentum, _positive_float, _positive_int
from lenet.capture import PRECISIONS
from lenet.models import MODELS

PROG = "python -m lenet.train"
DEFAULT_EPOCHS = 10
# The choices of a run: a checkpoint keeps them, and --resume refuses a command line that says otherwise.
HYPER = ("model", "finetune", "freeze", "new_head", "dataset", "epochs", "batch", "optimizer", "lr", "momentum",
         "schedule", "seed", "limit", "precision")
DATASETS = ("mnist", "fashion-mnist")


class TrainError(Exception):
    """A user-facing error: printed as `error: ...`, exit status 2, no traceback."""


def _layer_set(text: str) -> str:
    """'0-5' or '0,3,7-9' -> the same, normalised ('0-5'); checked against the model later."""
    try:
        idx = _parse_layers(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer indices like 0-5 or 0,3,7-9, got {text!r}") from None
    runs = []  # consecutive indices as ranges: 0,1,2,5 -> 0-2,5
    for i in idx:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _parse_layers(text: str) -> list[int]:
    out = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        lo, hi = int(lo), int(hi) if hi else int(lo)
        if lo < 0 or hi < lo:
            raise ValueError(part)
        out.update(range(lo, hi + 1))
    return sorted(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Train a LeNet into a model file, checkpointing every epoch (see --resume).",
        epilog="Defaults (fresh runs): lenet5, 10 epochs; batch 64 and SGD 0.05 momentum 0.9 with a cosine schedule "
               "for lenet5, batch 128 and Adam 1e-3 with a constant one for coreml. With --resume, what is not given "
               "comes from the checkpoint and what is given must agree with it.")
    p.add_argument("--out", metavar="FILE", required=True, help="the model file to write (and the checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out FILE with a new run")
    p.add_argument("--model", choices=sorted(MODELS), default=None, help="lenet5 (default) or coreml")
    p.add_argument("--epochs", type=_positive_int, default=None, help=f"epochs in all (default {DEFAULT_EPOCHS})")
    p.add_argument("--stop-after", type=_positive_int, default=None, metavar="EPOCH",
                   help="stop after this epoch this time (the schedule still spans --epochs); --resume continues")
    p.add_argument("--batch", type=_positive_int, default=None, help="minibatch size")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None)
    p.add_argument("--lr", type=_positive_float, default=None, help="learning rate (0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--momentum", type=_momentum, default=None, help="SGD momentum (default 0.9)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=None,
                   help="cosine: decay the learning rate to 0 over the run; constant: keep it (as python -m lenet.bench)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initialisation and the shuffles (default 0)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32 (default), or bf16: the dense layers' products and the later convolutions' gradients "
                        "with operands rounded to bf16 and fp32 "
                        "sums, fast on CPUs with AMX or AVX512-BF16 (lenet.Trainer's precision)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads (default: all usable cores; results do not depend on it)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder with the data set's four IDX files; for mnist default $LENET_MNIST_DIR, else the "
                        "lenet cache (downloading into it); for fashion-mnist $LENET_FASHION_MNIST_DIR, else "
                        "Debian's /usr/share/datasets/fashion-mnist")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only; the test set stays whole")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="mnist (default) or fashion-mnist")
    p.add_argument("--finetune", metavar="BASE", default=None,
                   help="start from the graph and weights of the model file BASE instead of a new model")
    p.add_argument("--freeze", type=_layer_set, default=None, metavar="LAYERS",
                   help="layers (indices into the model's layer list, e.g. 0-5 for LeNet-5's convolutions) whose "
                        "parameters stay as they are")
    p.add_argument("--new-head", action="store_true", default=None,
                   help="re-initialise the last Linear layer (seeded by --seed): new classes for --finetune")
    return p


# ---- the run's settings -------------------------------------------------------------------------------------------
def _fresh_settings(args) -> dict:
    if args.finetune is not None and args.model is not None:
        raise TrainError("--finetune BASE trains BASE's graph: leave out --model")
    if args.new_head and args.finetune is None:
        raise TrainError("--new-head goes with --finetune BASE")
    model = args.model or "lenet5"
    optimizer = args.optimizer or MODEL_DEFAULTS[model]["optimizer"]
    if optimizer == "adam" and args.momentum is not None:
        raise TrainError("--momentum applies to --optimizer sgd only")
    return {"model": None if args.finetune else model, "finetune": args.finetune, "freeze": args.freeze or "", "new_head": bool(args.new_head),
            "dataset": args.dataset or "mnist", "epochs": args.epochs or DEFAULT_EPOCHS,
            "batch": args.batch or MODEL_DEFAULTS[model]["batch"], "optimizer": optimizer,
            "lr": args.lr or LR_DEFAULTS[optimizer],
            "momentum": (0.9 if args.momentum is None else args.momentum) if optimizer == "sgd" else None,
            "schedule": args.schedule or ("cosine" if optimizer == "sgd" else "constant"),
            "seed": 0 if args.seed is None else args.seed, "limit": args.limit, "precision": args.precision or "fp32"}


def _resumed_settings(args, saved: dict, epochs_done: int) -> dict:
    """The checkpoint's settings; TrainError listing every one the command line contradicts."""
    given = {k: getattr(args, k) for k in HYPER}
    saved = {"precision": "fp32", **saved}  # checkpoints from before --precision trained in fp32
    out, conflicts = dict(saved), []
    for key, value in given.items():
        if value is None or value == saved.get(key):
            continue
        if key == "epochs" and saved["schedule"] == "constant" and value >= epochs_done:
            out["epochs"] = value  # a constant learning rate: the run may be made longer
            continue
        conflicts.append(f"--{key.replace('_', '-')} {value} (the checkpoint has {saved.get(key)})")
    if conflicts:
        raise TrainError(f"{args.out} was trained with other settings: {'; '.join(conflicts)}. Leave them out to "
                         "continue that run, or start a new one with another --out (or --overwrite)")
    return out


# ---- data, model, optimiser ---------------------------------------------------------------------------------------
def load_data(settings: dict, args) -> ldata.MNIST:
    try:
        if settings["dataset"] == "fashion-mnist":
            return ldata.load_fashion_mnist(args.data)
        return ldata.load_mnist(args.data, download=not args.no_download)
    except ldata.MNISTNotFound as exc:
        raise TrainError(str(exc)) from None
    except (ldata.IDXError, OSError) as exc:
        raise TrainError(f"cannot read {settings['dataset']}: {exc}") from None


def _classes(dataset: str) -> list:
    return list(ldata.FASHION_CLASSES) if dataset == "fashion-mnist" else [str(i) for i in range(10)]


def _data_digest(labels: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(labels)).hexdigest()


def new_model(settings: dict) -> lenet.Model:
    """The model a fresh run starts from: a new one, or --finetune's (its last Linear new with --new-head)."""
    classes = _classes(settings["dataset"])
    if settings["finetune"] is None:
        lenet.seed(settings["seed"])
        return lenet.Model(MODELS[settings["model"]](), classes=classes)
    try:
        base = lenet.load(settings["finetune"])
    except (model_file.ModelFileError, OSError) as exc:
        raise TrainError(f"--finetune {settings['finetune']}: {exc}") from None
    module = base.module
    if settings["new_head"]:
        last = max((i for i, m in enumerate(module.layers) if isinstance(m, lenet.nn.Linear)), default=None)
        if last is None:
            raise TrainError(f"--new-head: {settings['finetune']} has no Linear layer")
        old = module.layers[last]
        module[last] = lenet.nn.Linear(old.weight.shape[1], len(classes),
                                       rng=np.random.default_rng(settings["seed"]))
    try:
        return lenet.Model(module, base.input_shape, classes)
    except ValueError as exc:
        raise TrainError(f"--finetune {settings['finetune']}: {exc} (add --new-head for new classes)") from None


def freeze_layers(module, spec: str) -> list[int]:
    """Freeze the layers `spec` names ('0-5', '0,3'); returns their indices."""
    idx = _parse_layers(spec) if spec else []
    if idx and idx[-1] >= len(module.layers):
        raise TrainError(f"--freeze {spec}: the model has layers 0-{len(module.layers) - 1}:\n{module!r}")
    for i in idx:
        module.layers[i].freeze()
    if not module.trainable_parameters():
        raise TrainError(f"--freeze {spec} freezes every parameter: nothing would train")
    return idx


def make_trainer(module, settings: dict) -> lenet.Trainer:
    params = module.trainable_parameters()
    if settings["optimizer"] == "sgd":
        opt = optim.SGD(params, lr=settings["lr"], momentum=settings["momentum"])
    else:
        opt = optim.Adam(params, lr=settings["lr"])
    # The captured step skips frozen layers' gradients and stops its backward pass below the first trainable layer.
    return lenet.Trainer(module, opt, batch_size=settings["batch"], seed=settings["seed"], log=None, captured=True,
                         lr_schedule="cosine" if settings["schedule"] == "cosine" else None,
                         precision=settings["precision"])


# ---- checkpoint <-> trainer state ---------------------------------------------------------------------------------
def _state_to_file(state: dict) -> tuple[dict, dict]:
    """Trainer.state_dict() -> (JSON metadata, extra tensors). The generator's state goes as a JSON string: its
    128-bit integers would not survive a JSON number."""
    opt = state["optimizer"]
    tensors = {f"optimizer.{k}": v for k, v in opt.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in state.items() if k not in ("optimizer", "rng")}
    meta["rng"] = json.dumps(state["rng"])
    meta["optimizer"] = {k: v for k, v in opt.items() if not isinstance(v, np.ndarray)}
    return meta, tensors


def _state_from_file(meta: dict, tensors: dict) -> dict:
    opt = dict(meta["optimizer"])
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            opt[name[len("optimizer."):]] = value
    return {**meta, "rng": json.loads(meta["rng"]), "optimizer": opt}


def read_checkpoint(path: str) -> tuple[lenet.Model, dict, dict]:
    """(model, the training record of its metadata, its extra tensors); TrainError when it is not a checkpoint."""
    if not os.path.exists(path):
        raise TrainError(f"--resume: {path} does not exist (nothing to continue; leave out --resume to start)")
    try:
        model = lenet.load(path)
        _, tensors = model_file.read(path)
    except (model_file.ModelFileError, OSError) as exc:
        raise TrainError(f"--resume: {exc}") from None
    training = model.metadata.get("training")
    if not isinstance(training, dict) or "trainer" not in training or "settings" not in training:
        raise TrainError(f"--resume: {path} is a model file without training state (not written by {PROG})")
    return model, training, tensors


# ---- main ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        return _run(args)
    except TrainError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; {args.out} holds the last finished epoch (continue with --resume)",
              file=sys.stderr)
        return 130


def _run(args) -> int:
    out = args.out
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise TrainError(f"--out {out}: folder {folder} does not exist or is not writable")
    if args.resume and args.overwrite:
        raise TrainError("--resume continues --out FILE, --overwrite replaces it: give one")
    if os.path.isdir(out):
        raise TrainError(f"--out {out} is a folder")
    if not args.resume and os.path.exists(out) and not args.overwrite:
        raise TrainError(f"--out {out} exists: --resume continues it, --overwrite starts again over it")
    if args.threads is not None:
        lenet.set_num_threads(args.threads)

    if args.resume:
        model, training, tensors = read_checkpoint(out)
        done, history = int(training["epochs_done"]), list(training.get("history", []))
        settings = _resumed_settings(args, training["settings"], done)
    else:
        settings, done, history = _fresh_settings(args), 0, []
        model = new_model(settings)
    epochs = settings["epochs"]
    stop = epochs if args.stop_after is None else args.stop_after
    if stop > epochs:
        raise TrainError(f"--stop-after {stop} is past --epochs {epochs}")
    if done >= epochs:
        print(f"{out}: already trained for {done}/{epochs} epochs (test accuracy "
              f"{model.metadata.get('accuracy', float('nan')):.4f}); nothing to do")
        return 0

    mnist = load_data(settings, args)
    x, y = mnist.train_images, mnist.train_labels
    if settings["limit"] is not None:
        x, y = x[:settings["limit"]], y[:settings["limit"]]
    digest = _data_digest(y)
    if args.resume and training.get("data_digest") != digest:
        raise TrainError(f"the training data ({mnist.path}, {len(y)} images) is not what {out} was trained on")
    module = model.module
    frozen = freeze_layers(module, settings["freeze"])
    trainer = make_trainer(module, settings)
    if args.resume:
        try:
            trainer.load_state_dict(_state_from_file(training["trainer"], tensors))
        except (KeyError, ValueError, TypeError) as exc:
            raise TrainError(f"--resume: {out} has unusable training state ({type(exc).__name__}: {exc})") from None
    else:
        trainer.plan_schedule(epochs, len(x))

    n_params = sum(p.data.size for p in module.parameters())
    n_train = sum(p.data.size for p in module.trainable_parameters())
    what = settings["model"] or f"{settings['finetune']} (fine-tuning)"
    print(f"{'resuming' if args.resume else 'training'} {what}"
          f" on {settings['dataset']} ({len(x):,} training images from {mnist.path}), {n_train:,} of {n_params:,} "
          f"parameters trained" + (f" (layers {settings['freeze']} frozen)" if frozen else "") +
          f"; epochs {done + 1}-{stop} of {epochs}, batch {settings['batch']}, {settings['optimizer']} "
          f"lr {settings['lr']:g}, {settings['schedule']} schedule, seed {settings['seed']}, "
          f"{lenet.get_num_threads()} thread(s)", flush=True)
    for epoch in range(done + 1, stop + 1):
        r = trainer.train_epoch(x, y)
        t0 = time.perf_counter()
        ev = trainer.evaluate(mnist.test_images, mnist.test_labels)
        history.append({"epoch": epoch, "loss": r["loss"], "seconds": r["seconds"], "test_accuracy": ev["accuracy"]})
        meta, extra = _state_to_file(trainer.state_dict())
        training = {"settings": settings, "epochs_done": epoch, "complete": epoch == epochs, "trainer": meta,
                    "data_digest": digest, "data": mnist.source, "history": history}
        try:
            model.save(out, accuracy=ev["accuracy"], extra_tensors=extra, training=training)
        except (OSError, ValueError) as exc:
            raise TrainError(f"cannot write {out}: {exc}") from None
        print(f"epoch {epoch}/{epochs}  loss {r['loss']:.4f}  {r['seconds']:.2f} s  {r['samples_per_s']:,.0f} "
              f"samples/s  test accuracy {ev['accuracy']:.4f}  (eval {time.perf_counter() - t0:.2f} s, saved {out})",
              flush=True)
    if stop < epochs:
        print(f"stopped after epoch {stop} of {epochs}; continue with: {PROG} --out {out} --resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
