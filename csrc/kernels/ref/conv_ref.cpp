// Reference direct convolution and its weight gradient (stride 1, pre-padded input): the definitions the SIMD
// direct kernels match.
#include "ref.h"

namespace lenet::ref {

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw], bias [oc] -> y [oc][oh][ow][L].
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y) {
    const int L = s->lanes, pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    for (int o = 0; o < s->oc; ++o)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < L; ++l) {
                    float acc = bias ? bias[o] : 0.0f;
                    for (int c = 0; c < s->ic; ++c)
                        for (int ky = 0; ky < s->kh; ++ky)
                            for (int kx = 0; kx < s->kw; ++kx)
                                acc += w[((o * s->ic + c) * s->kh + ky) * s->kw + kx] *
                                       xpad[((ptrdiff_t(c) * ph + oy + ky) * pw + ox + kx) * L + l];
                    y[((ptrdiff_t(o) * s->oh + oy) * s->ow + ox) * L + l] = acc;
                }
}

// xpad [ic][oh+kh-1][ow+kw-1][L], dy [oc][oh][ow][L] -> dw [oc][ic][kh][kw] (overwritten).
void conv_direct_dw(const ConvShape* s, const float* xpad, const float* dy, float* dw) {
    const int L = s->lanes, pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    for (int o = 0; o < s->oc; ++o)
        for (int c = 0; c < s->ic; ++c)
            for (int ky = 0; ky < s->kh; ++ky)
                for (int kx = 0; kx < s->kw; ++kx) {
                    float acc = 0.0f;
                    for (int oy = 0; oy < s->oh; ++oy)
                        for (int ox = 0; ox < s->ow; ++ox)
                            for (int l = 0; l < L; ++l)
                                acc += dy[((ptrdiff_t(o) * s->oh + oy) * s->ow + ox) * L + l] *
                                       xpad[((ptrdiff_t(c) * ph + oy + ky) * pw + ox + kx) * L + l];
                    dw[((o * s->ic + c) * s->kh + ky) * s->kw + kx] = acc;
                }
}

}  // namespace lenet::ref
