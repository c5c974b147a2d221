"""--plot FILE: the comparison (epoch time per framework) and the training curves (loss and test accuracy per
epoch), drawn from the benchmark's JSON document as one PNG. matplotlib is an optional extra (`pip install
matplotlib`, or `pip install "lenet[plot]"`)."""
from __future__ import annotations

from ..fileio import write_atomic


def plot(doc: dict, path: str) -> None:
    """Write the PNG atomically (a temporary file in the same folder, then a rename)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from None

    runs = {"lenet": doc["lenet"]["epochs"]}
    for name, peer in doc.get("peers", {}).items():
        if peer.get("status") == "ok":
            runs[name] = peer["result"]["epochs"]
    times = {r["framework"]: r["epoch_seconds"] for r in doc.get("comparison", []) if r.get("epoch_seconds")}
    times.setdefault("lenet", doc["lenet"]["epoch_seconds"])

    fig, (ax_t, ax_loss, ax_acc) = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(times)
    bars = ax_t.bar(names, [times[n] for n in names], color=["tab:blue"] + ["tab:gray"] * (len(names) - 1))
    for bar, name in zip(bars, names):
        ax_t.annotate(f"{times[name]:.2f} s", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom")
    ax_t.set_ylabel("seconds per epoch")
    cfg = doc["config"]
    mixed = ", bf16 (each its own)" if cfg.get("precision") == "bf16" else ""
    ax_t.set_title(f"{doc['model']['title']}: epoch time\n{cfg['threads']} thread(s), batch {cfg['batch']}, "
                   f"{cfg['isa']}{mixed}")
    for name, epochs in runs.items():
        x = [e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["loss"] for e in epochs], marker="o", label=name)
        ax_acc.plot(x, [e["test_acc"] for e in epochs], marker="o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    if doc["data"].get("synthetic"):
        fig.suptitle("SYNTHETIC digit set, not MNIST", color="red")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
