// bf16.h on Intel AMX: the GEMM in tdpbf16ps on 16 x 16 fp32 tiles; the packing is the AVX512-BF16 table's
// (bf16_avx512.cpp). Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512bw -mavx512vl; chosen only where
// CpuFeatures::amx_bf16 holds (which includes the OS's permission for this process to use tile data).
#include <immintrin.h>
#include <string.h>

#include "avx512_regs.h"
#include "bf16.h"

namespace lenet {

namespace {

// ---- packing

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
              ptrdiff_t ldc, int transpose_c, const int*, int) {  // every pair (bf16.h: kp)
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
    const Bf16Table* packing = bf16_table_avx512();  // built with this file (CMakeLists.txt)
    static const Bf16Table t = {"amx", packing->convert, packing->pairs, gemm_amx, true};
    return &t;
}

}  // namespace lenet
