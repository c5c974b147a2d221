"""The compiled kernels: which instruction set serves each op, and how many threads run them.

The instruction set is chosen once, at import, from what the CPU supports (or forced with the environment
variable ``LENET_ISA=reference|avx2|avx512|neon``); the thread count defaults to the cores this process may use
(or ``LENET_NUM_THREADS``).
"""
from __future__ import annotations

import contextlib
import os

from . import _core


def kernels() -> dict:
    """What this process runs: CPU features found, the instruction set in use, where that choice came from,
    the instruction sets available, the thread count, and the kernel serving each op."""
    return _core.kernel_info()


def available_isas() -> list[str]:
    """Instruction sets this build has and this CPU runs, best last."""
    return list(_core.available_isas())


def current_isa() -> str:
    return _core.kernel_info()["isa"]


def set_isa(name: str) -> None:
    """Serve every op from the kernels of `name` (``reference``, ``avx2``, ``avx512``)."""
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str):
    """Temporarily run every op on the kernels of one instruction set (tests and benchmarks)."""
    previous = current_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def set_num_threads(n: int) -> None:
    """Threads the kernels run on (the calling thread counts as one)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"threads must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    return _core.get_num_threads()


def _default_threads() -> int:
    env = os.environ.get("LENET_NUM_THREADS")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"LENET_NUM_THREADS must be an integer, got {env!r}") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


set_num_threads(_default_threads())
