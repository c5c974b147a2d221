// Vector types of the x86 int8 kernels (int8_kernels.h). Included only by the x86 int8 translation units, each
// compiled with its own flags: everything here has internal linkage.
#pragma once
#include <immintrin.h>
#include <string.h>

namespace lenet {
namespace {

// 8 int32 lanes. With -mavxvnni (__AVXVNNI__) the dot product is one vpdpbusd; without it, the bytes are split
// into even and odd 16-bit halves and summed with vpmaddwd: exact, where vpmaddubsw would saturate at 32767.
struct DotAVX2 {
    static constexpr int V = 8, kFlip = 0;
    using I = __m256i;
    using F = __m256;
    static I zero() { return _mm256_setzero_si256(); }
    static I load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
    static I bcast(int32_t v) { return _mm256_set1_epi32(v); }
    static I prep(I v) { return v; }
    static I dot(I acc, I u, I s) {
#if defined(__AVXVNNI__)
        return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
        const I ue = _mm256_and_si256(u, _mm256_set1_epi16(0x00ff)), uo = _mm256_srli_epi16(u, 8);
        const I se = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8), so = _mm256_srai_epi16(s, 8);
        return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(ue, se), _mm256_madd_epi16(uo, so)));
#endif
    }
    static I add(I a, I b) { return _mm256_add_epi32(a, b); }
    static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F max(F a, F b) { return _mm256_max_ps(a, b); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }
    static I round(F a) { return _mm256_cvtps_epi32(a); }  // MXCSR default: nearest, half to even
    static I seti(int32_t v) { return _mm256_set1_epi32(v); }
    static F setf(float v) { return _mm256_set1_ps(v); }
    static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static F loadf(const float* p) { return _mm256_loadu_ps(p); }
    static void store_u8(uint8_t* y, I q, int n) {
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        const __m128i b = _mm_packus_epi16(w, w);
        if (n == V) {
            _mm_storel_epi64(reinterpret_cast<__m128i*>(y), b);
        } else {
            uint8_t t[16];
            _mm_storeu_si128(reinterpret_cast<__m128i*>(t), b);
            memcpy(y, t, size_t(n));
        }
    }
    static void regroup(const uint8_t* s, uint8_t* d) {  // bytes 0..15 in both halves, then 8 overlapping groups
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
        const __m256i idx = _mm256_setr_epi8(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6,
                                             4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7, 8, 9, 10);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm256_shuffle_epi8(v, idx));
    }
    static void store_f(float* y, F v, int n) {
        if (n == V) {
            _mm256_storeu_ps(y, v);
        } else {
            float t[8];
            _mm256_storeu_ps(t, v);
            memcpy(y, t, size_t(n) * 4);
        }
    }
};

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// 16 int32 lanes, vpdpbusd; partial vectors through masked stores.
struct DotAVX512 {
    static constexpr int V = 16, kFlip = 0;
    using I = __m512i;
    using F = __m512;
    static I zero() { return _mm512_setzero_si512(); }
    static I load(const void* p) { return _mm512_loadu_si512(p); }
    static I bcast(int32_t v) { return _mm512_set1_epi32(v); }
    static I prep(I v) { return v; }
    static I dot(I acc, I u, I s) { return _mm512_dpbusd_epi32(acc, u, s); }
    static I add(I a, I b) { return _mm512_add_epi32(a, b); }
    static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F max(F a, F b) { return _mm512_max_ps(a, b); }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }
    static I round(F a) { return _mm512_cvtps_epi32(a); }
    static I seti(int32_t v) { return _mm512_set1_epi32(v); }
    static F setf(float v) { return _mm512_set1_ps(v); }
    static I loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
    static F loadf(const float* p) { return _mm512_loadu_ps(p); }
    static __mmask16 first(int n) { return __mmask16((1u << n) - 1u); }
    static void store_u8(uint8_t* y, I q, int n) { _mm_mask_storeu_epi8(y, first(n), _mm512_cvtepi32_epi8(q)); }
    static void store_f(float* y, F v, int n) { _mm512_mask_storeu_ps(y, first(n), v); }
    static void regroup(const uint8_t* s, uint8_t* d) {  // 128-bit lane i: bytes 4i..4i+15, then 4 groups each
        const __m512i lanes = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6), _mm512_loadu_si512(s));
        const __m512i idx = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6));
        _mm512_storeu_si512(d, _mm512_shuffle_epi8(lanes, idx));
    }
};
#endif

}  // namespace
}  // namespace lenet
