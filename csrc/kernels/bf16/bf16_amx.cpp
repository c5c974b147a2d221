// bf16.h on Intel AMX: the GEMM in tdpbf16ps on 16 x 16 fp32 tiles, the packing in AVX512-BF16 (vcvtne2ps2bf16)
// with AVX-512 permutes. Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512bw -mavx512vl; chosen only where
// CpuFeatures::amx_bf16 holds (which includes the OS's permission for this process to use tile data).
#include <immintrin.h>
#include <string.h>

#include "bf16.h"

namespace lenet {

namespace {

// ---- packing

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

// 16 floats of a and 16 of b -> 16 dwords, pair j = (bf16(a[j]), bf16(b[j])).
__m512i interleaved(__m512 a, __m512 b) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));  // [a0..a15 | b0..b15]
}

void convert_amx(int rows, int cols, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldd) {
    if (cs == 1) {  // along src's rows
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; c += 16) {
                const __mmask16 m = first(cols - c);
                const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + r * rs + c));
                _mm256_mask_storeu_epi16(dst + r * ldd + c, m, (__m256i)h);
            }
        return;
    }
    if (rs != 1) return kBf16Reference.convert(rows, cols, src, rs, cs, dst, ldd);
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

void pairs_amx(int K, int N, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldb) {
    uint32_t* out = reinterpret_cast<uint32_t*>(dst);  // one dword per (pair, column)
    if (cs == 1) {  // along src's rows: rows k and k + 1 interleaved
        for (int k = 0; k < K; k += 2)
            for (int n = 0; n < N; n += 16) {
                const __mmask16 m = first(N - n);
                const __m512 a = _mm512_maskz_loadu_ps(m, src + k * rs + n);
                const __m512 b = k + 1 < K ? _mm512_maskz_loadu_ps(m, src + (k + 1) * rs + n) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(out + (k / 2) * ldb + n, m, interleaved(a, b));
            }
        return;
    }
    if (rs != 1) return kBf16Reference.pairs(K, N, src, rs, cs, dst, ldb);
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

struct alignas(64) TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

// Tiles 0-3: C (2 x 2 of 16 x 16 fp32), 4-5: A (16 rows x 32 bf16), 6-7: B (16 pairs x 16 columns).
void configure() {
    TileConfig c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; ++t) {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
    _tile_loadconfig(&c);
}

// Where C goes: C[m * ldc + n] for m < M, n < N, or C[n * ldc + m] when transposed.
struct Out {
    float* C;
    ptrdiff_t ldc;
    int M, N;
    bool transposed;
};

// A 16 x 16 result tile (row-major in `tile`) at (m, n) of the product into C: only its rows < M and columns < N,
// transposed in registers when C is.
void store_from(const float* tile, const Out& o, int m, int n) {
    const int rows = o.M - m < 16 ? o.M - m : 16, cols = o.N - n < 16 ? o.N - n : 16;
    if (!o.transposed) {
        for (int i = 0; i < rows; ++i) memcpy(o.C + (m + i) * o.ldc + n, tile + i * 16, size_t(cols) * sizeof(float));
        return;
    }
    __m512i r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(tile + i * 16);
    transpose16(r);  // r[j]: column n + j of the product, rows m..m+15
    for (int j = 0; j < cols; ++j) _mm512_mask_storeu_epi32(o.C + (n + j) * o.ldc + m, first(rows), r[j]);
}

// Tile T (a literal: the intrinsics name the register) into C at (m, n): straight from the tile when it lies whole
// inside an untransposed C, else through `tile` and store_from.
#define LENET_STORE_TILE(T, m, n)                                              \
    do {                                                                       \
        if (!o.transposed && (m) + 16 <= o.M && (n) + 16 <= o.N) {             \
            _tile_stored(T, o.C + (m) * o.ldc + (n), o.ldc * 4);               \
        } else {                                                               \
            alignas(64) float tile[16 * 16];                                   \
            _tile_stored(T, tile, 64);                                         \
            store_from(tile, o, (m), (n));                                     \
        }                                                                      \
    } while (0)

template <bool M2, bool N2>
void block(int m, int n, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, const Out& o) {
    _tile_zero(0);
    if (N2) _tile_zero(1);
    if (M2) _tile_zero(2);
    if (M2 && N2) _tile_zero(3);
    for (int k = 0; k < K; k += 32) {
        const uint16_t* a = A + m * lda + k;
        const uint16_t* b = B + ((k / 2) * ldb + n) * 2;
        _tile_loadd(4, a, lda * 2);
        _tile_loadd(6, b, ldb * 4);
        _tile_dpbf16ps(0, 4, 6);
        if (N2) {
            _tile_loadd(7, b + 32, ldb * 4);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (M2) {
            _tile_loadd(5, a + 16 * lda, lda * 2);
            _tile_dpbf16ps(2, 5, 6);
            if (N2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    LENET_STORE_TILE(0, m, n);
    if (N2) LENET_STORE_TILE(1, m, n + 16);
    if (M2) LENET_STORE_TILE(2, m + 16, n);
    if (M2 && N2) LENET_STORE_TILE(3, m + 16, n + 16);
}

#undef LENET_STORE_TILE

void block_at(int m, int n, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, const Out& o) {
    const bool m2 = m + 16 < o.M, n2 = n + 16 < o.N;
    if (m2 && n2) block<true, true>(m, n, K, A, lda, B, ldb, o);
    else if (m2) block<true, false>(m, n, K, A, lda, B, ldb, o);
    else if (n2) block<false, true>(m, n, K, A, lda, B, ldb, o);
    else block<false, false>(m, n, K, A, lda, B, ldb, o);
}

// Blocks of 32 x 32, the larger operand streamed once: with M >= N row blocks outside (A's 32 rows stay in L1
// across the columns), else column blocks outside (B's 32 columns stay in L1 across the rows).
void gemm_amx(int M, int N, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, float* C,
              ptrdiff_t ldc, int transpose_c) {
    configure();  // every call: another library in the process may have released the tiles
    const Out o{C, ldc, M, N, transpose_c != 0};
    if (M >= N) {
        for (int m = 0; m < M; m += 32)
            for (int n = 0; n < N; n += 32) block_at(m, n, K, A, lda, B, ldb, o);
    } else {
        for (int n = 0; n < N; n += 32)
            for (int m = 0; m < M; m += 32) block_at(m, n, K, A, lda, B, ldb, o);
    }
}

}  // namespace

const Bf16Table* bf16_table_amx() {
    static const Bf16Table t = {"amx", convert_amx, pairs_amx, gemm_amx};
    return &t;
}

}  // namespace lenet
