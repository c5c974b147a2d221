// GEMM microkernels written once over a vector type V (vec_*.h) and instantiated per ISA.
// Everything here has internal linkage (anonymous namespace): each ISA's translation unit gets its own copy.
#pragma once
#include <stddef.h>

#include "tile.h"

namespace lenet::simd {
namespace {

// ---- C[M][N] (+)= A[M][K] * B[K][N]: register tile MR rows x NV vectors, B rows broadcast-free -------------
// A is read as A[m*rsa + k*csa] (a strided A gives A^T for free); B[k][n] and C[m][n] are row-major.
// Only the last of the NV vectors can be partial (`last` floats valid) when TAIL. ADJ: rsa == 1 (A^T, as in a dense
// layer's input gradient), known at compile time, so that a tile's A values for one k are adjacent. PF (with ADJ):
// each k also prefetches the line of A that the same tile reads K rows on, in the next chunk of K (gemm_nn); with
// an index list ks (the sum over k = ks[0..K) only), K rows on from this k, about where the next chunk's rows are.
template <class V, int MR, int NV, bool TAIL, bool ADJ, bool PF = false>
LENET_ONE_LOOP void gemm_nn_tile(int K, const float* A, ptrdiff_t rsa_, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
                                 float* C, ptrdiff_t ldc, int accumulate, int last, const int* ks) {
    const ptrdiff_t rsa = ADJ ? 1 : rsa_;
    typename V::T acc[MR][NV];
    LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
        LENET_TILE_LOOP for (int j = 0; j < NV; ++j) {
            const float* c = C + i * ldc + j * V::W;
            acc[i][j] = !accumulate ? V::zero() : (TAIL && j == NV - 1) ? V::load_n(c, last) : V::load(c);
        }
    for (int kk = 0; kk < K; ++kk) {
        const ptrdiff_t k = ks ? ks[kk] : kk;
        if constexpr (PF) __builtin_prefetch(A + (k + K) * csa);
        typename V::T b[NV];
        LENET_TILE_LOOP for (int j = 0; j < NV; ++j) {
            const float* p = B + k * ldb + j * V::W;
            b[j] = (TAIL && j == NV - 1) ? V::load_n(p, last) : V::load(p);
        }
        LENET_TILE_LOOP for (int i = 0; i < MR; ++i) {
            const typename V::T a = V::set1(A[i * rsa + k * csa]);
            LENET_TILE_LOOP for (int j = 0; j < NV; ++j) acc[i][j] = V::fmadd(a, b[j], acc[i][j]);
        }
    }
    LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
        LENET_TILE_LOOP for (int j = 0; j < NV; ++j) {
            float* c = C + i * ldc + j * V::W;
            if (TAIL && j == NV - 1) V::store_n(c, acc[i][j], last);
            else V::store(c, acc[i][j]);
        }
}

// Rows per tile for NV vectors per row: fill the accumulator budget, at most 12 rows.
template <class V, int NV> constexpr int gemm_nn_mr() {
    return V::acc_budget / NV < 12 ? V::acc_budget / NV : 12;
}
template <class V> constexpr int gemm_nn_nv() { return V::acc_budget >= 24 ? 4 : 2; }

// Row remainder (fewer than MR rows): pick the tile of exactly `rem` rows.
template <class V, int R, int NV, bool TAIL>
void gemm_nn_rem(int rem, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
                 float* C, ptrdiff_t ldc, int accumulate, int last, const int* ks) {
    if constexpr (R > 0) {
        if (rem == R) gemm_nn_tile<V, R, NV, TAIL, false>(K, A, rsa, csa, B, ldb, C, ldc, accumulate, last, ks);
        else gemm_nn_rem<V, R - 1, NV, TAIL>(rem, K, A, rsa, csa, B, ldb, C, ldc, accumulate, last, ks);
    }
}

// One column panel of NV vectors, all M rows.
template <class V, int NV, bool TAIL, bool PF>
void gemm_nn_panel(int M, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
                   float* C, ptrdiff_t ldc, int accumulate, int last, const int* ks) {
    constexpr int MR = gemm_nn_mr<V, NV>();
    int m = 0;
    for (; m + MR <= M; m += MR) {
        // A^T (rsa == 1) in whole tiles of the widest panel: the adjacent A values' offsets known at compile time
        // (a dense layer's input gradient, 1152 x 64 x 500 on one thread: 1.06x)
        if constexpr (!TAIL && NV == gemm_nn_nv<V>())
            if (rsa == 1) {
                gemm_nn_tile<V, MR, NV, false, true, PF>(K, A + m, 1, csa, B, ldb, C + m * ldc, ldc, accumulate, last,
                                                         ks);
                continue;
            }
        gemm_nn_tile<V, MR, NV, TAIL, false>(K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, accumulate, last, ks);
    }
    gemm_nn_rem<V, MR - 1, NV, TAIL>(M - m, K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, accumulate, last, ks);
}

template <class V, int NV, bool PF>
void gemm_nn_panel_nv(int nv, bool tail, int M, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                      const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc, int accumulate, int last,
                      const int* ks) {
    if constexpr (NV > 0) {
        if (nv != NV)
            return gemm_nn_panel_nv<V, NV - 1, PF>(nv, tail, M, K, A, rsa, csa, B, ldb, C, ldc, accumulate, last, ks);
        if (tail) gemm_nn_panel<V, NV, true, PF>(M, K, A, rsa, csa, B, ldb, C, ldc, accumulate, last, ks);
        else gemm_nn_panel<V, NV, false, PF>(M, K, A, rsa, csa, B, ldb, C, ldc, accumulate, last, ks);
    }
}

// A^T (rsa == 1, a dense layer's input gradient) at 16 lanes on AVX-512: tiles of 16 adjacent rows, one whole cache
// line of A per k (measured 1.2x faster than 12 rows on the MNIST-CoreML-Training graph's 1152 x 500 layer); the
// rows left over go to the usual panel, so that this adds one tile function, not one per remainder.
template <class V> constexpr bool gemm_nn_adjacent_rows() { return V::W == 16 && V::acc_budget >= 16; }
constexpr int kAdjacentRows = 16;

// A^T (rsa == 1) walks A down its columns: each k of a tile is another row of A, csa floats on (a page apart in
// the MNIST-CoreML-Training graph's 1152 x 500 layer, where no prefetcher follows). K is therefore taken in chunks
// of kTransposedKChunk, every tile of the chunk before the next: each tile then reads that many rows of A side by
// side, as streams the prefetchers follow, and C is re-read per chunk from L1/L2. The sum over k keeps its order, so
// the result is bit-identical. (That layer's input gradient, per block of 16 samples: 1.45x faster on one thread,
// 1.85x on two, where both cores stream A from L3; 32 measured faster than 16 on two threads, 64 and up slower.)
constexpr int kTransposedKChunk = 32;
// Where those rows are a page or more apart (kFarRowFloats), they come from L3, and each tile prefetches the lines
// it will read in the next chunk (gemm_nn_tile's PF), so that a chunk's tiles find them in L2 instead of each
// waiting on its own misses. (The MNIST-CoreML-Training graph's step on 2 threads, medians of interleaved pairs:
// 3771 -> 3695 us over 6 pairs, 3779 -> 3740 over 8; LeNet-5's 400-float rows, which stay in L2, measured about 1%
// slower with it.)
constexpr ptrdiff_t kFarRowFloats = 1024;

// Panels of NV vectors: the widest (fewest passes over A) unless its row tile leaves a remainder that the next
// narrower one's does not. (A dense layer's weight gradient, split into tasks of 16 rows: 8 x 3 tiles take them in
// two full tiles, where 6 x 4 tiles took 6 + 6 + 4 and re-read the B panel a third time; measured 1.2x faster
// on AVX-512 on the MNIST-CoreML-Training graph's 16 x 1152, K = 128.)
template <class V> constexpr int gemm_nn_narrow_nv() { return gemm_nn_nv<V>() - 1; }
template <class V>
bool gemm_nn_narrow_panels(int M) {
    constexpr int wide = gemm_nn_mr<V, gemm_nn_nv<V>()>(), narrow = gemm_nn_mr<V, gemm_nn_narrow_nv<V>()>();
    return wide != narrow && M % wide != 0 && M % narrow == 0;
}

template <class V, int NV, bool PF>
void gemm_nn_range(int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
                   float* C, ptrdiff_t ldc, int accumulate, const int* ks) {
    constexpr int NR = NV * V::W;
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int nc = N - n0 < NR ? N - n0 : NR;
        const int nv = (nc + V::W - 1) / V::W, last = nc - (nv - 1) * V::W;
        int m = 0;
        if constexpr (gemm_nn_adjacent_rows<V>()) {
            if (rsa == 1 && nc == V::W)
                for (; m + kAdjacentRows <= M; m += kAdjacentRows)
                    gemm_nn_tile<V, kAdjacentRows, 1, false, true, PF>(K, A + m, 1, csa, B + n0, ldb,
                                                                       C + m * ldc + n0, ldc, accumulate, last, ks);
        }
        gemm_nn_panel_nv<V, NV, PF>(nv, last != V::W, M - m, K, A + m * rsa, rsa, csa, B + n0, ldb, C + m * ldc + n0,
                                ldc, accumulate, last, ks);
    }
}

// The range function for M rows: narrow or wide panels (gemm_nn_narrow_panels), with or without PF.
template <class V, bool PF>
auto gemm_nn_range_for(int M) {
    return gemm_nn_narrow_panels<V>(M) ? gemm_nn_range<V, gemm_nn_narrow_nv<V>(), PF>
                                       : gemm_nn_range<V, gemm_nn_nv<V>(), PF>;
}

// ks (may be null): the sum runs over k = ks[0], ..., ks[K-1] only (the rows of B that are not all zero, say), in
// that order; null: over k < K.
template <class V>
void gemm_nn(int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
             float* C, ptrdiff_t ldc, int accumulate, const int* ks) {
    if (rsa != 1 || K <= kTransposedKChunk)
        return gemm_nn_range_for<V, false>(M)(M, N, K, A, rsa, csa, B, ldb, C, ldc, accumulate, ks);
    const auto range = csa >= kFarRowFloats ? gemm_nn_range_for<V, true>(M) : gemm_nn_range_for<V, false>(M);
    for (int k0 = 0; k0 < K; k0 += kTransposedKChunk) {
        const int kc = K - k0 < kTransposedKChunk ? K - k0 : kTransposedKChunk;
        if (ks) range(M, N, kc, A, 1, csa, B, ldb, C, ldc, accumulate || k0 > 0, ks + k0);
        else range(M, N, kc, A + k0 * csa, 1, csa, B + k0 * ldb, ldb, C, ldc, accumulate || k0 > 0, nullptr);
    }
}

// ---- C[M][N] (+)= sum_k A[m][k] * B[n][k]: MR x NR dot products, vectors along k, one horizontal sum each ----
template <class V, int MR, int NR>
void gemm_nt_tile(int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc,
                  int accumulate) {
    typename V::T acc[MR][NR];
    LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
        LENET_TILE_LOOP for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
    int k = 0;
    for (; k + V::W <= K; k += V::W) {
        typename V::T a[MR], b[NR];
        LENET_TILE_LOOP for (int i = 0; i < MR; ++i) a[i] = V::load(A + i * lda + k);
        LENET_TILE_LOOP for (int j = 0; j < NR; ++j) b[j] = V::load(B + j * ldb + k);
        LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
            LENET_TILE_LOOP for (int j = 0; j < NR; ++j) acc[i][j] = V::fmadd(a[i], b[j], acc[i][j]);
    }
    if (k < K) {
        typename V::T a[MR], b[NR];
        LENET_TILE_LOOP for (int i = 0; i < MR; ++i) a[i] = V::load_n(A + i * lda + k, K - k);
        LENET_TILE_LOOP for (int j = 0; j < NR; ++j) b[j] = V::load_n(B + j * ldb + k, K - k);
        LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
            LENET_TILE_LOOP for (int j = 0; j < NR; ++j) acc[i][j] = V::fmadd(a[i], b[j], acc[i][j]);
    }
    LENET_TILE_LOOP for (int i = 0; i < MR; ++i)
        LENET_TILE_LOOP for (int j = 0; j < NR; ++j) {
            const float s = V::hsum(acc[i][j]);
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;
        }
}

template <class V> constexpr int gemm_nt_r() { return V::acc_budget >= 24 ? 4 : V::acc_budget >= 12 ? 3 : 2; }

template <class V, int MR, int NR>
void gemm_nt_cols(int nr, int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C,
                  ptrdiff_t ldc, int accumulate) {
    if constexpr (NR > 0) {
        if (nr == NR) gemm_nt_tile<V, MR, NR>(K, A, lda, B, ldb, C, ldc, accumulate);
        else gemm_nt_cols<V, MR, NR - 1>(nr, K, A, lda, B, ldb, C, ldc, accumulate);
    }
}
template <class V, int MR>
void gemm_nt_rows(int mr, int nr, int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C,
                  ptrdiff_t ldc, int accumulate) {
    if constexpr (MR > 0) {
        if (mr == MR) gemm_nt_cols<V, MR, gemm_nt_r<V>()>(nr, K, A, lda, B, ldb, C, ldc, accumulate);
        else gemm_nt_rows<V, MR - 1>(mr, nr, K, A, lda, B, ldb, C, ldc, accumulate);
    }
}

// N == 1 (a matrix-vector product: a dense layer on one sample): MR rows at a time against the one vector, enough
// independent accumulators to cover the FMA latency.
template <class V> constexpr int gemv_rows() { return V::acc_budget >= 24 ? 8 : V::acc_budget >= 12 ? 6 : 4; }
template <class V, int MR>
void gemv_rows_tile(int mr, int K, const float* A, ptrdiff_t lda, const float* B, float* C, ptrdiff_t ldc,
                    int accumulate) {
    if constexpr (MR > 0) {
        if (mr == MR) gemm_nt_tile<V, MR, 1>(K, A, lda, B, 0, C, ldc, accumulate);
        else gemv_rows_tile<V, MR - 1>(mr, K, A, lda, B, C, ldc, accumulate);
    }
}

template <class V>
void gemm_nt(int M, int N, int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C,
             ptrdiff_t ldc, int accumulate) {
    if (N == 1) {
        constexpr int G = gemv_rows<V>();
        for (int m = 0; m < M; m += G)
            gemv_rows_tile<V, G>(M - m < G ? M - m : G, K, A + m * lda, lda, B, C + m * ldc, ldc, accumulate);
        return;
    }
    constexpr int R = gemm_nt_r<V>();
    for (int m = 0; m < M; m += R) {
        const int mr = M - m < R ? M - m : R;
        for (int n = 0; n < N; n += R) {
            const int nr = N - n < R ? N - n : R;
            gemm_nt_rows<V, R>(mr, nr, K, A + m * lda, lda, B + n * ldb, ldb, C + m * ldc + n, ldc, accumulate);
        }
    }
}

}  // namespace
}  // namespace lenet::simd
