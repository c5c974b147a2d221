// 16-float vector type over AVX-512F intrinsics: the interface every kernels/simd template is written against
// (W lanes; load/store, masked partial load/store of the first n lanes, fmadd, compare + select, exp,
// pairwise max of neighbours).
// Include only from a translation unit compiled with -mavx512f (isa_avx512.cpp).
#pragma once
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

namespace lenet::simd {

struct VecAVX512 {
    using T = __m512;
    using M = __mmask16;
    static constexpr int W = 16;
    static constexpr const char* isa = "avx512";
    static constexpr int acc_budget = 24;  // accumulator registers a microkernel may hold (of 32)

    static T zero() { return _mm512_setzero_ps(); }
    static T set1(float v) { return _mm512_set1_ps(v); }
    static T load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
    static M first(int n) { return M((1u << n) - 1u); }  // n in [0, 16]
    static T load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
    static T load_u8(const uint8_t* p) {  // 16 bytes, each to a float
        return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
    static void store_n(float* p, T v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
    // A store that bypasses the caches (p aligned to 64 bytes), and the fence that orders such stores before later ones.
    static constexpr bool has_stream = true;
    static void stream(float* p, T v) { _mm512_stream_ps(p, v); }
    static void stream_fence() { _mm_sfence(); }
    static T add(T a, T b) { return _mm512_add_ps(a, b); }
    static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
    static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
    static T div(T a, T b) { return _mm512_div_ps(a, b); }
    static T max(T a, T b) { return _mm512_max_ps(a, b); }
    static T min(T a, T b) { return _mm512_min_ps(a, b); }
    // Neighbours along the row: [max(a0, a1), max(a2, a3), ..., max(a14, a15), max(b0, b1), ..., max(b14, b15)].
    static T pairmax(T a, T b) {
        const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        return _mm512_max_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
    }
    static T sqrt(T a) { return _mm512_sqrt_ps(a); }
    static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }  // a*b + c
    static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
    static float hsum(T a) { return _mm512_reduce_add_ps(a); }
    static M gt(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
    static M eq(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static M mand(M a, M b) { return M(a & b); }
    static M mandnot(M a, M b) { return M(~a & b); }  // (not a) and b
    static M mor(M a, M b) { return M(a | b); }
    static M mnone() { return 0; }
    static T select(M m, T a, T b) { return _mm512_mask_blend_ps(m, b, a); }  // m ? a : b
    static T round(T a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static T scale2(T a, T n) { return _mm512_scalef_ps(a, n); }  // a * 2^n, n integral
    // The lanes of v that m selects, stored contiguously from p (up to 16 floats written); returns how many.
    static int compress(float* p, T v, M m) {
        _mm512_storeu_ps(p, _mm512_maskz_compress_ps(m, v));
        return __builtin_popcount(unsigned(m));
    }
    // dst row c (c < 16, stride ds) = column c of the 16 rows of src (stride ss): 64 shuffles in four rounds, each
    // interleaving twice as many rows as the last (floats, pairs of them, then 128-bit quarters twice).
    static void transpose16(const float* src, ptrdiff_t ss, float* dst, ptrdiff_t ds) {
        __m512 r[16], t[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        const auto pd = [](__m512 v) { return _mm512_castps_pd(v); };
        for (int i = 0; i < 16; i += 4) {  // r[i + j], each 128-bit quarter q: column 4q + j of rows i..i+3
            r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i]), pd(t[i + 2])));
            r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i]), pd(t[i + 2])));
            r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i + 1]), pd(t[i + 3])));
            r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i + 1]), pd(t[i + 3])));
        }
        for (int j = 0; j < 4; ++j) {
            const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
            const __m512 b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
            const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
            const __m512 d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
            _mm512_storeu_ps(dst + j * ds, _mm512_shuffle_f32x4(a, c, 0x88));
            _mm512_storeu_ps(dst + (4 + j) * ds, _mm512_shuffle_f32x4(b, d, 0x88));
            _mm512_storeu_ps(dst + (8 + j) * ds, _mm512_shuffle_f32x4(a, c, 0xdd));
            _mm512_storeu_ps(dst + (12 + j) * ds, _mm512_shuffle_f32x4(b, d, 0xdd));
        }
    }
    // An optimisation barrier: v is in a register from here on (the compiler may not fold its load into the next
    // instructions as a memory operand).
    static void keep_in_register(T& v) { asm("" : "+v"(v)); }
};

}  // namespace lenet::simd
