"""python -m lenet.predict MODEL IMAGE...: classify images with a model file.

    python -m lenet.predict mnist.lenet digit.png                  # digit.png  7  0.9987
    python -m lenet.predict mnist.lenet scan.pgm --invert --top 3  # a dark digit on a light background
    python -m lenet.predict mnist.lenet batch.npy --json

Images: PGM/PPM (P2, P3, P5, P6), PNG (grey, RGB, RGBA, palette; not interlaced) or .npy (one image or a batch),
read by lenet.images; colour becomes grey. They must already have the model's input size (no resizing). The MNIST
convention is a light digit on a dark background: --invert turns a dark-on-light image around.

Output: one line per image (a .npy batch: one per image, as FILE[i]): the path, the predicted class and its
probability, or the K most probable with --top K; --json prints one JSON document instead.
Exit status: 0; 1 when an image could not be read or does not fit (the others are still classified);
2 for bad arguments or an unreadable model file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import images as limages
from .bench.__main__ import _positive_int
from .model_file import ModelFileError, load

PROG = "python -m lenet.predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Classify images with a lenet model file.")
    p.add_argument("model", metavar="MODEL", help="a model file (lenet.save, python -m lenet.train)")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="PGM/PPM, PNG or .npy files of the model's input size (a .npy may hold a batch)")
    p.add_argument("--invert", action="store_true",
                   help="the images are dark on a light background (the model expects light on dark, as MNIST); "
                        "transparent pixels then count as light")
    p.add_argument("--top", type=_positive_int, default=1, metavar="K", help="print the K most probable classes")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def _fit(x: np.ndarray, model, path: str) -> np.ndarray:
    """x (H, W) or (N, H, W) checked against the model's input (1, H, W)."""
    c, h, w = model.input_shape
    if c != 1:
        raise limages.ImageError(f"the model takes {c}-channel input; images are read as grey (1 channel)")
    if x.shape[-2:] != (h, w):
        raise limages.ImageError(f"{path}: the image is {x.shape[-1]}x{x.shape[-2]} pixels (width x height); the "
                                 f"model takes {w}x{h} images: resize it first")
    return x


def main(argv=None) -> int:
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        model = load(args.model)
    except (ModelFileError, OSError) as e:
        print(f"{PROG}: error: cannot load the model: {e}", file=sys.stderr)
        return 2
    k = min(args.top, len(model.classes))
    results, failed = [], 0
    for path in args.images:
        try:
            x = _fit(limages.read_image(path, background=1.0 if args.invert else 0.0), model, path)
        except (limages.ImageError, OSError) as e:
            msg = str(e) if isinstance(e, limages.ImageError) else f"{path}: {e.strerror or e}"
            print(f"{PROG}: error: {msg}", file=sys.stderr)
            failed += 1
            continue
        if args.invert:
            x = 1.0 - x
        proba = model.predict_proba(x)
        names = [path] if x.ndim == 2 else [f"{path}[{i}]" for i in range(len(x))]
        for name, p in zip(names, np.atleast_2d(proba)):
            best = np.argsort(-p, kind="stable")[:k]
            results.append({"path": name, "class": model.classes[best[0]], "probability": float(p[best[0]]),
                            "top": [{"class": model.classes[i], "probability": float(p[i])} for i in best]})
            if not args.json:
                print(f"{name}  " + "  ".join(f"{model.classes[i]}  {p[i]:.4f}" for i in best), flush=True)
    if args.json:
        print(json.dumps({"model": args.model, "results": results, "errors": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader of the output (e.g. head) went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
