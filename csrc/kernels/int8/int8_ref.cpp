// int8 reference kernels: the plain loops of int8.h's definitions, the fallback on every CPU and the oracle the
// SIMD tables are tested against (byte for byte).
#include <math.h>
#include <string.h>

#include "int8.h"

namespace lenet {

namespace {

inline uint8_t requant_u8(int32_t acc, int m, const QRequant& r) {
    float f = float(acc + r.bias[m]) * r.mult[m];
    const float lo = float(r.lo - r.zero), hi = float(255 - r.zero);
    f = f < lo ? lo : (f > hi ? hi : f);
    return uint8_t(int(nearbyintf(f)) + r.zero);  // round half to even (the default rounding mode)
}

inline int32_t dot4(const uint8_t* x, const int8_t* w) {
    return int32_t(x[0]) * w[0] + int32_t(x[1]) * w[1] + int32_t(x[2]) * w[2] + int32_t(x[3]) * w[3];
}

void conv_ref(const QConvArgs* a) {
    const int G = a->groups;
    for (int m = 0; m < a->oc; ++m)
        for (int oy = 0; oy < a->oh; ++oy)
            for (int ox = 0; ox < a->ow; ++ox) {
                int32_t acc = 0;
                for (int c = 0; c < a->ic; ++c)
                    for (int ky = 0; ky < a->kh; ++ky)
                        for (int g = 0; g < G; ++g) {
                            const uint8_t* x = a->xq + ((ptrdiff_t(c * G + g) * a->hp + oy * a->sh + ky) * a->ld + ox) * 4;
                            const int8_t* w = a->w + ((ptrdiff_t(m * a->ic + c) * a->kh + ky) * G + g) * 4;
                            acc += dot4(x, w);
                        }
                a->y[(ptrdiff_t(m) * a->oh + oy) * a->ow + ox] = requant_u8(acc, m, a->rq);
            }
}

void dense_ref(const QDenseArgs* a) {
    for (int m = 0; m < a->m; ++m) {
        int32_t acc = 0;
        for (int k = 0; k < a->k4; ++k) acc += dot4(a->x + 4 * k, a->w + (ptrdiff_t(k) * a->mpad + m) * 4);
        if (a->y) a->y[m] = requant_u8(acc, m, a->rq);
        else a->yf[m] = float(acc + a->rq.bias[m]) * a->rq.mult[m];
    }
}

void regroup_ref(const uint8_t* src, int n, uint8_t* dst) {
    for (int i = 0; i < n; ++i) memcpy(dst + 4 * i, src + i, 4);
}

}  // namespace

extern const Int8Table kInt8Reference = {"reference", 1, conv_ref, dense_ref, regroup_ref, "qconv_u8s8__reference",
                                         "qdense_u8s8__reference"};

}  // namespace lenet
