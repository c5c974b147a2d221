// Loops over the compile-time dimensions of a register tile (rows, vectors, channels, pixels) are unrolled on
// request, before gcc's scalar replacement runs: otherwise, at -O3, a tile's accumulator array stays in memory and
// every iteration of the reduction loop stores it back (up to two stores per FMA, measured in the generated code:
// 96 spill stores in the AVX-512 6x64 GEMM tile), and the FMA pipes wait on the store port.
#pragma once

#define LENET_TILE_LOOP _Pragma("GCC unroll 64")
