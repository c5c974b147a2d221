// 4-float vector type over ARM Advanced SIMD (NEON) intrinsics, for aarch64 and for armv7 with -mfpu=neon
// (same interface as VecAVX512). Include only from isa_neon.cpp, the one file compiled with NEON enabled on armv7.
//
// armv7 NEON lacks what aarch64 has, so these are emulated there:
// - fused multiply-add (VFPv4 only): vmla/vmls, a multiply and an add each rounded, unless __ARM_FEATURE_FMA;
// - division and square root: per lane in scalar VFP, which rounds exactly like the x86 vector instructions;
// - round to nearest even: the 1.5 * 2^23 trick (exact for |a| < 2^22; larger floats are already integral).
// armv7 NEON arithmetic also flushes denormals to zero whatever the FPSCR says; training flushes them anyway.
#pragma once
#include <arm_neon.h>

namespace lenet::simd {

struct VecNEON {
    using T = float32x4_t;
    using M = uint32x4_t;  // all-ones / all-zeros lanes
    static constexpr int W = 4;
    static constexpr const char* isa = "neon";
#if defined(__aarch64__)
    static constexpr int acc_budget = 24;  // of 32 vector registers
#else
    static constexpr int acc_budget = 12;  // of 16 q registers
#endif

    static T zero() { return vdupq_n_f32(0.0f); }
    static T set1(float v) { return vdupq_n_f32(v); }
    static T load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, T v) { vst1q_f32(p, v); }
    // The first n lanes (n in [0, 4]); no byte past p[n-1] is read or written (it may be another page).
    static T load_n(const float* p, int n) {
        float buf[W] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int i = 0; i < n; ++i) buf[i] = p[i];
        return vld1q_f32(buf);
    }
    static void store_n(float* p, T v, int n) {
        float buf[W];
        vst1q_f32(buf, v);
        for (int i = 0; i < n; ++i) p[i] = buf[i];
    }
    // No cache-bypassing store for single vectors here: stream is a plain store (has_stream false).
    static constexpr bool has_stream = false;
    static void stream(float* p, T v) { vst1q_f32(p, v); }
    static void stream_fence() {}
    static T add(T a, T b) { return vaddq_f32(a, b); }
    static T sub(T a, T b) { return vsubq_f32(a, b); }
    static T mul(T a, T b) { return vmulq_f32(a, b); }
    static T max(T a, T b) { return vmaxq_f32(a, b); }
    static T min(T a, T b) { return vminq_f32(a, b); }
    // Neighbours along the row: [max(a0, a1), max(a2, a3), max(b0, b1), max(b2, b3)].
#if defined(__aarch64__)
    static T pairmax(T a, T b) { return vpmaxq_f32(a, b); }
#else
    static T pairmax(T a, T b) {
        return vcombine_f32(vpmax_f32(vget_low_f32(a), vget_high_f32(a)), vpmax_f32(vget_low_f32(b), vget_high_f32(b)));
    }
#endif
    static M gt(T a, T b) { return vcgtq_f32(a, b); }
    static M eq(T a, T b) { return vceqq_f32(a, b); }
    static M mand(M a, M b) { return vandq_u32(a, b); }
    static M mandnot(M a, M b) { return vbicq_u32(b, a); }  // (not a) and b
    static M mor(M a, M b) { return vorrq_u32(a, b); }
    static M mnone() { return vdupq_n_u32(0); }
    static T select(M m, T a, T b) { return vbslq_f32(m, a, b); }  // m ? a : b
    static T scale2(T a, T n) {  // a * 2^n for integral n in [-126, 127]: n + 127 is the exponent field of 2^n
        const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
        return vmulq_f32(a, vreinterpretq_f32_s32(e));
    }

#if defined(__aarch64__)
    static T div(T a, T b) { return vdivq_f32(a, b); }
    static T sqrt(T a) { return vsqrtq_f32(a); }
    static T fmadd(T a, T b, T c) { return vfmaq_f32(c, a, b); }  // a*b + c
    static T fnmadd(T a, T b, T c) { return vfmsq_f32(c, a, b); }  // c - a*b
    static float hsum(T a) { return vaddvq_f32(a); }
    static T round(T a) { return vrndnq_f32(a); }  // to nearest, ties to even
#else
    static T div(T a, T b) {
        return per_lane(a, b, [](float x, float y) { return x / y; });
    }
    static T sqrt(T a) {
        return per_lane(a, a, [](float x, float) { return __builtin_sqrtf(x); });  // vsqrt.f32 (-fno-math-errno)
    }
#if defined(__ARM_FEATURE_FMA)
    static T fmadd(T a, T b, T c) { return vfmaq_f32(c, a, b); }
    static T fnmadd(T a, T b, T c) { return vfmsq_f32(c, a, b); }
#else
    static T fmadd(T a, T b, T c) { return vmlaq_f32(c, a, b); }
    static T fnmadd(T a, T b, T c) { return vmlsq_f32(c, a, b); }
#endif
    static float hsum(T a) {
        const float32x2_t s = vadd_f32(vget_low_f32(a), vget_high_f32(a));
        return vget_lane_f32(vpadd_f32(s, s), 0);
    }
    static T round(T a) {  // ties to even: adding +-1.5 * 2^23 leaves no fraction bits, the FPU rounds the sum
        const T magic = vbslq_f32(vdupq_n_u32(0x80000000u), a, vdupq_n_f32(12582912.0f));  // sign of a
        const T r = vsubq_f32(vaddq_f32(a, magic), magic);
        return vbslq_f32(vcltq_f32(vabsq_f32(a), vdupq_n_f32(4194304.0f)), r, a);
    }

  private:
    template <class F> static T per_lane(T a, T b, F f) {
        float x[W], y[W];
        vst1q_f32(x, a);
        vst1q_f32(y, b);
        for (int i = 0; i < W; ++i) x[i] = f(x[i], y[i]);
        return vld1q_f32(x);
    }
#endif
};

}  // namespace lenet::simd
