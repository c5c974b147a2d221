// 8-float vector type over AVX2 + FMA intrinsics (same interface as VecAVX512).
// Include only from a translation unit compiled with -mavx2 -mfma (isa_avx2.cpp).
#pragma once
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

namespace lenet::simd {

struct VecAVX2 {
    using T = __m256;
    using M = __m256;  // all-ones / all-zeros lanes
    static constexpr int W = 8;
    static constexpr const char* isa = "avx2";
    static constexpr int acc_budget = 12;  // of 16 registers

    static T zero() { return _mm256_setzero_ps(); }
    static T set1(float v) { return _mm256_set1_ps(v); }
    static T load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
    static __m256i first(int n) {  // lanes [0, n) set, n in [0, 8]
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static T load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
    static T load_u8(const uint8_t* p) {  // 8 bytes, each to a float
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    static void store_n(float* p, T v, int n) { _mm256_maskstore_ps(p, first(n), v); }
    // A store that bypasses the caches (p aligned to 32 bytes), and the fence that orders such stores before later ones.
    static constexpr bool has_stream = true;
    static void stream(float* p, T v) { _mm256_stream_ps(p, v); }
    static void stream_fence() { _mm_sfence(); }
    static T add(T a, T b) { return _mm256_add_ps(a, b); }
    static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
    static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
    static T div(T a, T b) { return _mm256_div_ps(a, b); }
    static T max(T a, T b) { return _mm256_max_ps(a, b); }
    static T min(T a, T b) { return _mm256_min_ps(a, b); }
    // Neighbours along the row: [max(a0, a1), max(a2, a3), max(a4, a5), max(a6, a7), max(b0, b1), ..., max(b6, b7)].
    static T pairmax(T a, T b) {
        const __m256 m = _mm256_max_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));  // per 128 bits: a a b b
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), _MM_SHUFFLE(3, 1, 2, 0)));
    }
    static T sqrt(T a) { return _mm256_sqrt_ps(a); }
    static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
    static T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
    static float hsum(T a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static M gt(T a, T b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
    static M eq(T a, T b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
    static M mand(M a, M b) { return _mm256_and_ps(a, b); }
    static M mandnot(M a, M b) { return _mm256_andnot_ps(a, b); }
    static M mor(M a, M b) { return _mm256_or_ps(a, b); }
    static M mnone() { return _mm256_setzero_ps(); }
    static T select(M m, T a, T b) { return _mm256_blendv_ps(b, a, m); }
    static T round(T a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    // dst row c (c < 8, stride ds) = column c of the 8 rows of src (stride ss): floats of row pairs interleaved, then
    // pairs of those, then the 128-bit halves swapped between rows i and i + 4.
    static void transpose8(const float* src, ptrdiff_t ss, float* dst, ptrdiff_t ds) {
        __m256 r[8], t[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {  // r[i + j], each 128-bit half h: column 4h + j of rows i..i+3
            r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
            r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
        }
        for (int j = 0; j < 4; ++j) {
            _mm256_storeu_ps(dst + j * ds, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
            _mm256_storeu_ps(dst + (4 + j) * ds, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
        }
    }
    // The same for 16 rows of 16: four 8x8 blocks, each to its mirrored place.
    static void transpose16(const float* src, ptrdiff_t ss, float* dst, ptrdiff_t ds) {
        for (int i = 0; i < 16; i += 8)
            for (int j = 0; j < 16; j += 8) transpose8(src + i * ss + j, ss, dst + j * ds + i, ds);
    }
    static T scale2(T a, T n) {  // a * 2^n for integral n in [-126, 127]
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(a, _mm256_castsi256_ps(e));
    }
};

}  // namespace lenet::simd
