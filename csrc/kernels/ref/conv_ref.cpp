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

// One sample: xpad [ic][oh+kh-1][ow+kw-1], w [oc][ic][kh][kw], bias [oc] -> y [oc][oh/2][ow/2], the maximum of the
// convolution over each 2x2 window at stride 2, then a ReLU if relu.
void conv_pool_fwd(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int relu) {
    const int pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1, out_h = s->oh / 2, out_w = s->ow / 2;
    for (int o = 0; o < s->oc; ++o)
        for (int py = 0; py < out_h; ++py)
            for (int px = 0; px < out_w; ++px) {
                float best = 0.0f;
                for (int d = 0; d < 4; ++d) {
                    const int oy = 2 * py + d / 2, ox = 2 * px + d % 2;
                    float acc = bias ? bias[o] : 0.0f;
                    for (int c = 0; c < s->ic; ++c)
                        for (int ky = 0; ky < s->kh; ++ky)
                            for (int kx = 0; kx < s->kw; ++kx)
                                acc += w[((o * s->ic + c) * s->kh + ky) * s->kw + kx] *
                                       xpad[(ptrdiff_t(c) * ph + oy + ky) * pw + ox + kx];
                    if (d == 0 || acc > best) best = acc;
                }
                y[(ptrdiff_t(o) * out_h + py) * out_w + px] = relu && best < 0.0f ? 0.0f : best;
            }
}

}  // namespace lenet::ref
