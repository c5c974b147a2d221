// bf16.h on AVX512-BF16 (Intel from Cooper Lake, AMD from Zen 4): the packing in vcvtne2ps2bf16 with AVX-512
// permutes, and the GEMM in vdpbf16ps on fp32 register tiles (each instruction: two bf16 products per fp32 lane, twice
// the multiply-adds of an fp32 FMA). The AMX table (bf16_amx.cpp) packs with this table's functions. Compiled with
// -mavx512bf16 -mavx512f -mavx512bw -mavx512vl; chosen where CpuFeatures::avx512_bf16 holds and AMX does not.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "avx512_regs.h"
#include "bf16.h"

namespace lenet {

namespace {

// ---- packing

// 16 floats of a and 16 of b -> 16 dwords, pair j = (bf16(a[j]), bf16(b[j])).
__m512i interleaved(__m512 a, __m512 b) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));  // [a0..a15 | b0..b15]
}

// Whether 64 bytes at p can take a streamed store.
bool aligned64(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 63) == 0; }

void convert_avx512(int rows, int cols, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldd,
                    int stream) {
    if (cs == 1) {  // along src's rows, 32 columns (one 64-byte store) at a time
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; c += 32) {
                const float* s = src + r * rs + c;
                uint16_t* d = dst + r * ldd + c;
                if (stream && c + 32 <= cols && aligned64(d)) {
                    _mm512_stream_si512(reinterpret_cast<__m512i*>(d),
                                        (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s)));
                    continue;
                }
                for (int h = 0; h < 32 && c + h < cols; h += 16) {
                    const __mmask16 m = first(cols - c - h);
                    _mm256_mask_storeu_epi16(d + h, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, s + h)));
                }
            }
        if (stream) _mm_sfence();  // before the pool's barrier publishes dst to the other threads
        return;
    }
    if (rs != 1) return kBf16Reference.convert(rows, cols, src, rs, cs, dst, ldd, 0);
    // Transposed (rs == 1): blocks of 16 rows x 32 columns of dst; src row c holds dst's column c.
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 32) {
            const __mmask16 mr = first(rows - r0);
            __m512i t[16];
            for (int p = 0; p < 16; ++p) {  // pair p: dst columns c0 + 2p, c0 + 2p + 1 of rows r0..r0+15
                const int c = c0 + 2 * p;
                const __m512 a = c < cols ? _mm512_maskz_loadu_ps(mr, src + c * cs + r0) : _mm512_setzero_ps();
                const __m512 b = c + 1 < cols ? _mm512_maskz_loadu_ps(mr, src + (c + 1) * cs + r0)
                                              : _mm512_setzero_ps();
                t[p] = interleaved(a, b);
            }
            transpose16(t);  // t[j]: dst row r0 + j, columns c0..c0+31
            const __mmask32 mc = cols - c0 >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << (cols - c0)) - 1);
            for (int j = 0; j < 16 && r0 + j < rows; ++j)
                _mm512_mask_storeu_epi16(dst + (r0 + j) * ldd + c0, mc, t[j]);
        }
}

void pairs_avx512(int K, int N, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldb,
                  int stream) {
    uint32_t* out = reinterpret_cast<uint32_t*>(dst);  // one dword per (pair, column)
    if (cs == 1) {  // along src's rows: rows k and k + 1 interleaved
        for (int k = 0; k < K; k += 2)
            for (int n = 0; n < N; n += 16) {
                const __mmask16 m = first(N - n);
                const __m512 a = _mm512_maskz_loadu_ps(m, src + k * rs + n);
                const __m512 b = k + 1 < K ? _mm512_maskz_loadu_ps(m, src + (k + 1) * rs + n) : _mm512_setzero_ps();
                uint32_t* d = out + (k / 2) * ldb + n;
                if (stream && m == 0xffff && aligned64(d))
                    _mm512_stream_si512(reinterpret_cast<__m512i*>(d), interleaved(a, b));
                else
                    _mm512_mask_storeu_epi32(d, m, interleaved(a, b));
            }
        if (stream) _mm_sfence();
        return;
    }
    if (rs != 1) return kBf16Reference.pairs(K, N, src, rs, cs, dst, ldb, 0);
    // Transposed (rs == 1): src row n holds B's column n, k along it. Blocks of 32 k (16 pairs) x 16 columns: each
    // src row's 32 floats are 16 pairs in order, and a dword transpose puts them in B's rows.
    for (int k0 = 0; k0 < K; k0 += 32)
        for (int n0 = 0; n0 < N; n0 += 16) {
            const __mmask16 lo = first(K - k0), hi = first(K - k0 - 16);
            __m512i t[16];
            for (int i = 0; i < 16; ++i) {
                if (n0 + i >= N) {
                    t[i] = _mm512_setzero_si512();
                    continue;
                }
                const float* s = src + (n0 + i) * cs + k0;
                t[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + 16), _mm512_maskz_loadu_ps(lo, s));
            }
            transpose16(t);  // t[p]: pair k0/2 + p, columns n0..n0+15
            const __mmask16 mn = first(N - n0);
            for (int p = 0; p < 16 && k0 + 2 * p < K; ++p)
                _mm512_mask_storeu_epi32(out + (k0 / 2 + p) * ldb + n0, mn, t[p]);
        }
}

// ---- GEMM

// The pairs of k a GEMM sums: the list kp of np pairs, or (kp null) every pair, [0, np).
struct Pairs {
    const int* kp;
    int np;
};

// One register tile: rows [m, m + MR) of A times columns [n, n + 16 NV) of B, over the pairs of k in ks. Per pair:
// NV vectors of B (16 columns x 2 k each), and per row A's two bf16 of that pair broadcast as one dword, so that
// vdpbf16ps adds a[k] b[k][n] + a[k+1] b[k+1][n] to lane n. The rows and columns past M and N are there to read
// (bf16.h's padding: MR divides 16) and are not stored.
template <int MR, int NV>
void tile(Pairs ks, const uint16_t* A, ptrdiff_t lda, const uint32_t* B, ptrdiff_t ldb, const Out& o, int m, int n) {
    __m512 acc[MR][NV];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
    const uint16_t* a = A + m * lda;
    for (int q = 0; q < ks.np; ++q) {
        const int p = ks.kp ? ks.kp[q] : q;
        const uint32_t* b = B + n + p * ldb;
        __m512bh bv[NV];
        for (int j = 0; j < NV; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + 16 * j);
        for (int i = 0; i < MR; ++i) {
            uint32_t pair;
            memcpy(&pair, a + i * lda + 2 * p, sizeof pair);
            const __m512bh av = (__m512bh)_mm512_set1_epi32(int(pair));
            for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
        }
    }
    const int rows = o.M - m < MR ? o.M - m : MR;
    for (int j = 0; j < NV; ++j) {
        const int n0 = n + 16 * j, cols = o.N - n0 < 16 ? o.N - n0 : 16;
        if (cols <= 0) break;
        if (!o.transposed) {
            for (int i = 0; i < rows; ++i) _mm512_mask_storeu_ps(o.C + (m + i) * o.ldc + n0, first(cols), acc[i][j]);
            continue;
        }
        __m512i r[16];  // rows of the tile's 16 columns, transposed in registers into C's rows
        for (int i = 0; i < 16; ++i) r[i] = i < MR ? _mm512_castps_si512(acc[i][j]) : _mm512_setzero_si512();
        transpose16(r);  // r[c]: column n0 + c, rows m..m+15
        for (int c = 0; c < cols; ++c) _mm512_mask_storeu_epi32(o.C + (n0 + c) * o.ldc + m, first(rows), r[c]);
    }
}

// Columns [n, n + 16 nv) for every row, in tiles of 8 rows x 3 vectors (24 accumulators, 3 of B, 1 broadcast: 28 of
// the 32 registers), 8 x 2 at the last columns, or 16 x 1 (16 independent sums, enough to cover vdpbf16ps' latency).
void panel(int nv, Pairs ks, const uint16_t* A, ptrdiff_t lda, const uint32_t* B, ptrdiff_t ldb, const Out& o,
           int n) {
    if (nv == 1)
        for (int m = 0; m < o.M; m += 16) tile<16, 1>(ks, A, lda, B, ldb, o, m, n);
    else if (nv == 2)
        for (int m = 0; m < o.M; m += 8) tile<8, 2>(ks, A, lda, B, ldb, o, m, n);
    else
        for (int m = 0; m < o.M; m += 8) tile<8, 3>(ks, A, lda, B, ldb, o, m, n);
}

// Panels of 48 columns, each read from memory once and then from L1 or L2 by every row tile: a dense forward (out x
// lanes) has one or two panels and streams W's rows past them; the gradients (few rows, many columns) keep their few
// rows of A in L1 while the panels go by.
void gemm_avx512(int M, int N, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, float* C,
                 ptrdiff_t ldc, int transpose_c, const int* kp, int np) {
    const Out o{C, ldc, M, N, transpose_c != 0};
    const Pairs ks = np < 0 ? Pairs{nullptr, K / 2} : Pairs{kp, np};
    const uint32_t* b = reinterpret_cast<const uint32_t*>(B);  // one dword per (pair of k, column)
    const int vectors = (N + 15) / 16;
    for (int v = 0; v < vectors; v += 3) panel(vectors - v < 3 ? vectors - v : 3, ks, A, lda, b, ldb, o, 16 * v);
}

}  // namespace

const Bf16Table* bf16_table_avx512() {
    static const Bf16Table t = {"avx512_bf16", convert_avx512, pairs_avx512, gemm_avx512, false};
    return &t;
}

}  // namespace lenet
