"""Independent float64 numpy definitions of the ops, in plain NCHW, for the tests to compare against."""
import numpy as np


def conv2d(x, w, b, stride=(1, 1), padding=(0, 0)):
    """x (B,C,H,W), w (O,C,KH,KW), b (O,) -> (B,O,OH,OW)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    B, C, H, W = xp.shape
    O, _, KH, KW = w.shape
    OH, OW = (H - KH) // sh + 1, (W - KW) // sw + 1
    out = np.zeros((B, O, OH, OW))
    for ky in range(KH):
        for kx in range(KW):
            patch = xp[:, :, ky : ky + sh * (OH - 1) + 1 : sh, kx : kx + sw * (OW - 1) + 1 : sw]  # B,C,OH,OW
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, ky, kx])
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def pool2d(kind, x, kernel, stride):
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw) = kernel, stride
    B, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    windows = np.stack([x[:, :, ky : ky + sh * (OH - 1) + 1 : sh, kx : kx + sw * (OW - 1) + 1 : sw]
                        for ky in range(kh) for kx in range(kw)])
    return windows.max(axis=0) if kind == "max" else windows.mean(axis=0)


def linear(x, w, b):
    return np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + (0 if b is None else b)


def softmax_xent(logits, labels):
    """Per-sample loss and d(mean loss)/d(logits)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(labels)), labels])
    g = p.copy()
    g[np.arange(len(labels)), labels] -= 1
    return loss, g / len(labels)


def pool2d_backward(kind, x, dy, kernel, stride):
    """dx of pool2d: avg spreads dy evenly; max routes dy to the first maximum of each window (row-major)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    (kh, kw), (sh, sw) = kernel, stride
    OH, OW = dy.shape[2:]
    dx = np.zeros_like(x)
    positions = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    windows = np.stack([x[:, :, ky : ky + sh * (OH - 1) + 1 : sh, kx : kx + sw * (OW - 1) + 1 : sw] for ky, kx in positions])
    first = windows.argmax(axis=0)
    for i, (ky, kx) in enumerate(positions):
        share = dy / (kh * kw) if kind == "avg" else np.where(first == i, dy, 0.0)
        dx[:, :, ky : ky + sh * (OH - 1) + 1 : sh, kx : kx + sw * (OW - 1) + 1 : sw] += share
    return dx
