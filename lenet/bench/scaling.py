"""Thread scaling measured in one run: the same training steps at 1 thread and at N threads, alternating in short
chunks so that a slow phase of a shared machine slows both counts alike instead of whichever ran during it."""
from __future__ import annotations

import statistics
import time

import lenet

CHUNK_STEPS = 20  # steps per chunk: 10-40 ms, short against the machine's slow phases, long against a switch


def measure_scaling(trainer, images, labels, threads: int, chunk: int = CHUNK_STEPS) -> dict:
    """Run one epoch's minibatches (trainer.epoch_batches: a fresh shuffle) through trainer.run_batches at 1 thread
    and again at `threads`, chunk by chunk: each chunk of `chunk` steps runs at one count and then at the other (in ABBA
    order across chunks, so a drift over the run cancels). Every count sees every batch once. One untimed step after
    each switch lets the pool's workers start. Returns the epoch time at each count and the speedup, and each
    chunk's own speedup with their median: another process that takes a core for a moment stalls every thread at
    the next barrier, so it slows the N-thread count of its chunk far more than the 1-thread one; the median is the
    speedup of the chunks such moments missed."""
    if threads < 2:
        raise ValueError(f"thread scaling needs at least 2 threads, got {threads}")
    counts = (1, threads)
    before = lenet.get_num_threads()
    batches = trainer.epoch_batches(len(images))
    seconds = dict.fromkeys(counts, 0.0)
    chunk_speedups = []
    try:
        for k, start in enumerate(range(0, len(batches), chunk)):
            part = batches[start : start + chunk]
            chunk_seconds = {}
            for t in (counts if k % 2 == 0 else counts[::-1]):
                lenet.set_num_threads(t)
                trainer.step(images, labels, part[0])  # untimed: the workers start
                t0 = time.perf_counter()
                trainer.run_batches(images, labels, part)  # as train_epoch runs them
                chunk_seconds[t] = time.perf_counter() - t0
                seconds[t] += chunk_seconds[t]
            chunk_speedups.append(chunk_seconds[1] / chunk_seconds[threads])
    finally:
        lenet.set_num_threads(before)
    return {"threads": list(counts), "epoch_seconds": [seconds[t] for t in counts],
            "speedup": seconds[1] / seconds[threads], "chunk_steps": chunk, "steps_per_count": len(batches),
            "chunk_speedups": chunk_speedups, "median_chunk_speedup": statistics.median(chunk_speedups),
            "rule": f"one epoch of steps at each count, alternating every {chunk} steps (ABBA)"}
