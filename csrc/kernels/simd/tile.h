// Loops over the compile-time dimensions of a register tile (rows, vectors, channels, pixels) are unrolled on
// request, before gcc's scalar replacement runs: otherwise, at -O3, a tile's accumulator array stays in memory and
// every iteration of the reduction loop stores it back (up to two stores per FMA, measured in the generated code:
// 96 spill stores in the AVX-512 6x64 GEMM tile), and the FMA pipes wait on the store port.
#pragma once

#define LENET_TILE_LOOP _Pragma("GCC unroll 64")

// A register tile stays a function of its own: inlined into its dispatcher (with_size below), the tiles of every
// size of one kernel become one large function, measured 2-3% slower on the training step.
#define LENET_TILE_FUNCTION __attribute__((noinline))
// A helper (or lambda) inlined into its caller even where gcc would rather call it.
#define LENET_INLINE __attribute__((always_inline))

// A loop with a loop-invariant run-time switch inside (gemm_nn_tile's optional index list) stays one loop: at -O3 gcc
// copies it once per side of the switch, which in the GEMM tiles of every ISA took 16 KB more library for a test
// and a branch per k beside MR x NV FMAs. (Clang does not take this attribute, nor need it.)
#if defined(__GNUC__) && !defined(__clang__)
#define LENET_ONE_LOOP __attribute__((optimize("no-unswitch-loops")))
#else
#define LENET_ONE_LOOP
#endif

namespace lenet::simd {
namespace {  // internal linkage, like every kernel: each ISA's translation unit gets its own copy

// A tile size known at compile time, picked from a run-time one: with_size<MAX>(n, f) calls f(Size<n>{}) for n in
// [1, MAX], so each size is its own instantiation with its loops unrolled (full tiles, and the smaller ones at the
// edges). f reads the size as decltype(size)::value.
template <int N>
struct Size {
    static constexpr int value = N;
};
template <int MAX, class F>
void with_size(int n, F&& f) {
    if constexpr (MAX > 0) {
        if (n == MAX) f(Size<MAX>{});
        else with_size<MAX - 1>(n, f);
    }
}

}  // namespace
}  // namespace lenet::simd
