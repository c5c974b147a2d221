// bf16 kernels for the opt-in mixed-precision training of dense layers (TrainStep's Precision::Bf16): operands
// rounded to bfloat16, products summed in fp32, one table per instruction set like KernelTable. The plain loops
// (bf16_ref.cpp) are the reference and the fallback; the AMX table (bf16_amx.cpp: tdpbf16ps on Intel's tile unit,
// packing with AVX512-BF16) must give the same packed bytes and the same products, summed in another order.
//
// Rounding (every table): round to nearest even, denormals flushed to zero (in and out, as vcvtneps2bf16 does), NaN
// kept a quiet NaN.
//
// Like kernels.h, this header is included by ISA-specific translation units: no inline functions with external
// linkage, no C++ standard library headers.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace lenet {

// GEMM operands: A rows of bf16 (K along a row), B in pairs of rows, the layout tdpbf16ps reads:
//   B[k][n] at b[((k / 2) * ldb + n) * 2 + k % 2]
// so that one 64-byte row of a B tile holds 16 columns of two consecutive k.
struct Bf16Table {
    const char* isa;  // "reference", "amx"
    // dst[r * ldd + c] = bf16(src[r * rs + c * cs]) for r < rows, c < cols (nothing else written).
    void (*convert)(int rows, int cols, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldd);
    // B in pairs (above) from src: B[k][n] = bf16(src[k * rs + n * cs]) for k < K, n < N; if K is odd, the last
    // pair's second half is written 0. Nothing else written.
    void (*pairs)(int K, int N, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldb);
    // C = A [M][K] . B, overwritten: C[m * ldc + n], or with transpose_c C[n * ldc + m] (the product's transpose,
    // [N][M]). K a multiple of 32. A has ceil(M / 16) * 16 rows and B ceil(N / 16) * 16 columns (ldb at least that):
    // the rows and columns past M and N are read (they must be finite) but feed no output. Products exact in fp32,
    // summed in fp32 (the reference in k order).
    void (*gemm)(int M, int N, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, float* C,
                 ptrdiff_t ldc, int transpose_c);
};

extern const Bf16Table kBf16Reference;
const Bf16Table* bf16_table_amx();  // null unless built for x86-64 with a compiler that has -mamx-bf16

}  // namespace lenet
