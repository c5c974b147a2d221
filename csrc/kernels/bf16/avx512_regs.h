// Register helpers shared by the AVX-512 bf16 translation units (bf16_avx512.cpp, bf16_amx.cpp), which are compiled
// with -mavx512f -mavx512bw: internal linkage only, as in every ISA-specific unit.
#pragma once
#include <immintrin.h>
#include <stddef.h>

namespace lenet {
namespace {

// idx vectors of the 16 x 16 dword transpose: round d swaps the off-diagonal d x d blocks of each 2d x 2d block.
struct TransposeIdx {
    __m512i lo[4], hi[4];  // round r (d = 1 << r): new row i (bit d clear) and new row i + d
    TransposeIdx() {
        for (int r = 0; r < 4; ++r) {
            const int d = 1 << r;
            alignas(64) int a[16], b[16];
            for (int j = 0; j < 16; ++j) {
                a[j] = (j & d) ? 16 + j - d : j;  // row i keeps its columns without bit d, takes row i+d's
                b[j] = (j & d) ? 16 + j : j + d;  // row i+d keeps its columns with bit d, takes row i's
            }
            lo[r] = _mm512_load_si512(a);
            hi[r] = _mm512_load_si512(b);
        }
    }
};

void transpose16(__m512i r[16]) {
    static const TransposeIdx idx;
    for (int k = 0; k < 4; ++k) {
        const int d = 1 << k;
        for (int i = 0; i < 16; ++i)
            if (!(i & d)) {
                const __m512i a = r[i], b = r[i + d];
                r[i] = _mm512_permutex2var_epi32(a, idx.lo[k], b);
                r[i + d] = _mm512_permutex2var_epi32(a, idx.hi[k], b);
            }
    }
}

__mmask16 first(int n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n < 0 ? 0 : n)) - 1); }

// Where C goes: C[m * ldc + n] for m < M, n < N, or C[n * ldc + m] when transposed.
struct Out {
    float* C;
    ptrdiff_t ldc;
    int M, N;
    bool transposed;
};

}  // namespace
}  // namespace lenet
