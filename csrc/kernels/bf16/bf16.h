// bf16 kernels for the opt-in mixed-precision training of dense layers (TrainStep's Precision::Bf16): operands
// rounded to bfloat16, products summed in fp32, one table per instruction set like KernelTable. The plain loops
// (bf16_ref.cpp) are the reference and the fallback; the AVX512-BF16 table (bf16_avx512.cpp: vdpbf16ps on registers)
// and the AMX table (bf16_amx.cpp: tdpbf16ps on Intel's tile unit, packing as AVX512-BF16's) must give the same
// packed bytes and the same products, summed in another order.
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
    const char* isa;  // "reference", "avx512_bf16", "amx"
    // dst[r * ldd + c] = bf16(src[r * rs + c * cs]) for r < rows, c < cols (nothing else written). stream: write
    // dst with stores that bypass the caches where the table can (AVX512-BF16, along src's rows: the whole aligned
    // 64 bytes of dst), for a dst other threads have read (DenseBf16::refresh); the same bytes.
    void (*convert)(int rows, int cols, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldd,
                    int stream);
    // B in pairs (above) from src: B[k][n] = bf16(src[k * rs + n * cs]) for k < K, n < N; if K is odd, the last
    // pair's second half is written 0. Nothing else written. stream: as convert's.
    void (*pairs)(int K, int N, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldb,
                  int stream);
    // C = A [M][K] . B, overwritten: C[m * ldc + n], or with transpose_c C[n * ldc + m] (the product's transpose,
    // [N][M]). K a multiple of 32. A has ceil(M / 16) * 16 rows and B ceil(N / 16) * 16 columns (ldb at least that):
    // the rows and columns past M and N are read (they must be finite) but feed no output. Products exact in fp32,
    // summed in fp32 (the reference in k order).
    // np < 0: every pair of k; else kp lists np pairs (k / 2, increasing) whose products may be other than 0: the
    // caller's A columns or B rows of every other pair are all 0, so leaving them out changes no sum. The reference
    // and AVX512-BF16 sum only those pairs; AMX, whose tiles take 32 k at once, sums them all.
    void (*gemm)(int M, int N, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, float* C,
                 ptrdiff_t ldc, int transpose_c, const int* kp, int np);
    // Whether a fused conv-pool layer whose fp32 backward skips the pooling's zeros (block::conv_pool_sparse: a
    // quarter of the products or fewer) still takes the dense bf16 backward on this table, where its input gradient
    // can run in bf16 too (TrainStep::bf16_conv). AMX: yes (its tiles do many times the fp32 FMA's multiply-adds;
    // the MNIST-CoreML-Training graph's 32 -> 32 2x2 layer: its bf16 step on 2 threads of the Intel VM took 2336-2535
    // us against 2420-2580 us with the sparse fp32 backward, alternating processes, 4 each).
    // AVX512-BF16: no; it does twice the fp32 FMA's, and the MNIST-CoreML-Training graph's bf16 step on 2 threads
    // took 3546 us with its second layer's sparse fp32 backward against 4059 us with the dense bf16 one (AMD Zen 4,
    // 20 of 20 interleaved chunks). The reference: no.
    bool dense_over_sparse;
};

extern const Bf16Table kBf16Reference;
const Bf16Table* bf16_table_avx512();  // "avx512_bf16": null unless built for x86-64 with -mavx512bf16
const Bf16Table* bf16_table_amx();     // null unless built for x86-64 with a compiler that has -mamx-bf16

}  // namespace lenet
