// int8 kernels for AArch64 with the dot-product extension (armv8.2-a+dotprod: sdot; compiled with
// -march=armv8.2-a+dotprod in this file only, selected at run time through HWCAP_ASIMDDP). sdot multiplies int8 by
// int8: the uint8 codes are shifted to int8 (q ^ 0x80 = q - 128) and 128 * sum(weights) is added back in the
// bias, which keeps the sums exact.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "int8_kernels.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "compile with -march=armv8.2-a+dotprod"
#endif

namespace lenet {
namespace {

struct DotNeon {
    static constexpr int V = 4, kFlip = 128;
    using I = int32x4_t;
    using F = float32x4_t;
    static I zero() { return vdupq_n_s32(0); }
    static I load(const void* p) { return vreinterpretq_s32_u8(vld1q_u8(static_cast<const uint8_t*>(p))); }
    static I bcast(int32_t v) { return vdupq_n_s32(v); }
    static I prep(I v) { return veorq_s32(v, vdupq_n_s32(int32_t(0x80808080u))); }
    static I dot(I acc, I u, I s) { return vdotq_s32(acc, vreinterpretq_s8_s32(u), vreinterpretq_s8_s32(s)); }
    static I add(I a, I b) { return vaddq_s32(a, b); }
    static F cvt(I a) { return vcvtq_f32_s32(a); }
    static F mul(F a, F b) { return vmulq_f32(a, b); }
    static F max(F a, F b) { return vmaxq_f32(a, b); }
    static F min(F a, F b) { return vminq_f32(a, b); }
    static I round(F a) { return vcvtnq_s32_f32(a); }  // nearest, half to even
    static I seti(int32_t v) { return vdupq_n_s32(v); }
    static F setf(float v) { return vdupq_n_f32(v); }
    static I loadi(const int32_t* p) { return vld1q_s32(p); }
    static F loadf(const float* p) { return vld1q_f32(p); }
    static void store_u8(uint8_t* y, I q, int n) {
        const int16x4_t h = vmovn_s32(q);
        const uint8x8_t b = vqmovun_s16(vcombine_s16(h, h));
        uint8_t t[8];
        vst1_u8(t, b);
        memcpy(y, t, size_t(n));
    }
    static void regroup(const uint8_t* s, uint8_t* d) {
        static const uint8_t kIdx[16] = {0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6};
        vst1q_u8(d, vqtbl1q_u8(vld1q_u8(s), vld1q_u8(kIdx)));
    }
    static void store_f(float* y, F v, int n) {
        if (n == V) {
            vst1q_f32(y, v);
        } else {
            float t[4];
            vst1q_f32(t, v);
            memcpy(y, t, size_t(n) * 4);
        }
    }
};

}  // namespace

const Int8Table* int8_table_neon_dot() {
    using D = DotNeon;
    static const Int8Table t = {"neon_dot", D::V, int8k::conv<D>, int8k::dense<D>, int8k::regroup<D>,
                                "qconv_4oc_x_8px_sdot__neon_dot", "qdense_16out_sdot__neon_dot"};
    return &t;
}

}  // namespace lenet
#endif
