// How long two cores take to hand a cache line to each other: the cost under every step's synchronisation and
// under every weight that one core updates and the other reads next. On this project's shared machines it moves
// between phases (a round trip of about 85 ns, and about 400 ns in the slow phases, where two-thread training
// slows down while one thread keeps its speed), so the benchmark reports it beside its timings.
#pragma once

namespace lenet {

// Median over a few batches of the round-trip time, in nanoseconds, of one cache line handed back and forth between
// the calling thread and a second thread (each pinned to one of the first two CPUs the caller may use, for the
// measurement), `trips` times per batch. NaN when the second thread could not run
// alongside (one usable core, or a machine too busy to start it within 0.5 s or finish a batch within 50 ms).
double core_round_trip_ns(int trips);

}  // namespace lenet
