"""Benchmarks: ``python -m lenet.bench`` trains a LeNet on MNIST and reports time, samples/s and GFLOP/s per
epoch, optionally side by side with PyTorch and TensorFlow training the same graph on the same data.

Modules
-------
``lenet.bench.__main__``
    The command line (``python -m lenet.bench --help``).
``lenet.bench.flops``
    FLOPs per sample of forward, backward and one training step, counted from the model's layers.
``lenet.bench.peer_torch``, ``lenet.bench.peer_tensorflow`` (with ``peer_common``)
    The peers: each runs in its own subprocess (started as a script, so it never imports lenet or its compiled
    module), reads an ``.npz`` with x_train / y_train / x_test / y_test and writes a JSON result.

Small helpers shared by the command line and its tests live here: which peers exist and whether they are
installed, the epoch-time rule, machine information and the atomic JSON write.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import time

from ..fileio import write_atomic

__all__ = ["Peer", "PEERS", "PEER_ALIASES", "peer_script", "peer_available", "peer_version", "epoch_time",
           "cpu_model", "usable_cores", "loadavg", "machine_info", "write_json_atomic", "CpuMeter"]


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str          # as given to --compare and shown in the tables
    script: str        # file in this folder, run as `python <path> ...`
    module: str        # the framework's import name (availability is checked without importing it)
    dists: tuple       # distribution names to read its version from


PEERS = {
    "torch": Peer("torch", "peer_torch.py", "torch", ("torch",)),
    "tensorflow": Peer("tensorflow", "peer_tensorflow.py", "tensorflow",
                       ("tensorflow", "tensorflow-cpu", "tensorflow-intel")),
}
PEER_ALIASES = {"pytorch": "torch", "tf": "tensorflow", "keras": "tensorflow"}


def peer_script(peer: Peer) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), peer.script)


def peer_available(peer: Peer) -> bool:
    """Is the peer's framework installed for this Python?  (find_spec: the framework is not imported.)"""
    try:
        return importlib.util.find_spec(peer.module) is not None
    except (ImportError, ValueError):
        return False


def peer_version(peer: Peer):
    """The installed framework's version from its package metadata, or None."""
    for dist in peer.dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def epoch_time(seconds) -> tuple:
    """The epoch time reported for a run: (seconds, how).

    The median of the epochs after the first when there are at least 2 (epoch 1 pays the warm-up: page faults,
    thread start-up, a framework's tracing), else the only epoch.
    """
    seconds = [float(s) for s in seconds]
    if not seconds:
        raise ValueError("no epochs")
    if len(seconds) == 1:
        return seconds[0], "the only epoch"
    rest = seconds[1:]
    how = "epoch 2" if len(rest) == 1 else f"median of epochs 2-{len(seconds)}"
    return statistics.median(rest), how


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else whatever platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "loadavg": loadavg(),
    }


def write_json_atomic(path: str, obj) -> None:
    """Write `obj` as JSON to `path` atomically (lenet.fileio.write_atomic)."""
    write_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n", binary=False)


def _proc_stat():
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    v = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class CpuMeter:
    """How busy the machine was with *other* work over an interval, in cores.

    others = (machine-wide busy CPU time from /proc/stat - the CPU time of this process and of the children it
    waited for) / wall time; steal = time the hypervisor gave to other guests / wall time.  On a 2-core machine,
    others ~ 1 means another job took about half the machine: the timings of that interval are suspect.
    `stop()` returns None where /proc/stat is unavailable (not Linux).
    """

    def __init__(self):
        self._wall, self._machine, self._own = time.perf_counter(), _proc_stat(), _own_cpu()

    def stop(self):
        wall = time.perf_counter() - self._wall
        machine, own = _proc_stat(), _own_cpu() - self._own
        if self._machine is None or machine is None or wall <= 0:
            return None
        busy, steal = machine[0] - self._machine[0], machine[1] - self._machine[1]
        return {"wall_seconds": wall, "own_cores": own / wall, "others_cores": max(0.0, busy - own) / wall,
                "steal_cores": max(0.0, steal) / wall}
