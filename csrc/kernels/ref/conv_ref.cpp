// Reference direct convolution and its weight gradient (stride 1, pre-padded input): the definitions the SIMD
// direct kernels match.
#include "ref.h"

#include <algorithm>
#include <vector>

namespace lenet::ref {

namespace {
// Output channel o at pixel (oy, ox), lane l: bias + the sum over the window, in (c, ky, kx) order.
float conv_at(const ConvShape* s, const float* xpad, const float* w, const float* bias, int o, int oy, int ox, int l) {
    const int L = s->lanes, pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    float acc = bias ? bias[o] : 0.0f;
    for (int c = 0; c < s->ic; ++c)
        for (int ky = 0; ky < s->kh; ++ky)
            for (int kx = 0; kx < s->kw; ++kx)
                acc += w[((o * s->ic + c) * s->kh + ky) * s->kw + kx] *
                       xpad[((ptrdiff_t(c) * ph + oy + ky) * pw + ox + kx) * L + l];
    return acc;
}
}  // namespace

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw], bias [oc] -> y [oc][oh][ow][L]. (The reference reads w;
// w_cl, the same weights channels-last, is for the SIMD kernels.)
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float*, const float* bias, float* y) {
    for (int o = 0; o < s->oc; ++o)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < s->lanes; ++l)
                    y[((ptrdiff_t(o) * s->oh + oy) * s->ow + ox) * s->lanes + l] = conv_at(s, xpad, w, bias, o, oy, ox, l);
}

// xpad [ic][oh+kh-1][ow+kw-1][L], dy [oc][oh][ow][L] inside a border (bh, bw) -> dw [oc][ic][kh][kw] (overwritten).
void conv_direct_dw(const ConvShape* s, const float* xpad, const float* dy, int bh, int bw, float* dw) {
    const int L = s->lanes, pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    const int gh = s->oh + 2 * bh, gw = s->ow + 2 * bw;
    for (int o = 0; o < s->oc; ++o)
        for (int c = 0; c < s->ic; ++c)
            for (int ky = 0; ky < s->kh; ++ky)
                for (int kx = 0; kx < s->kw; ++kx) {
                    float acc = 0.0f;
                    for (int oy = 0; oy < s->oh; ++oy)
                        for (int ox = 0; ox < s->ow; ++ox)
                            for (int l = 0; l < L; ++l)
                                acc += dy[((ptrdiff_t(o) * gh + oy + bh) * gw + ox + bw) * L + l] *
                                       xpad[((ptrdiff_t(c) * ph + oy + ky) * pw + ox + kx) * L + l];
                    dw[((o * s->ic + c) * s->kh + ky) * s->kw + kx] = acc;
                }
}

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw], bias [oc] -> y [oc][oh/2][ow/2][L], the maximum of the
// convolution over each 2x2 window at stride 2 (then a ReLU if relu), and argmax: the window position of the first
// maximum, 0-3 row-major, or -1 where the ReLU zeroed the output (relu and a maximum <= 0: no gradient).
namespace {
// One pooled output y[i] (and argmax[i]) from its window's four convolution values, row-major.
void store_pooled(const float conv[4], int relu, ptrdiff_t i, float* y, float* argmax) {
    float best = conv[0];
    int at = 0;
    for (int d = 1; d < 4; ++d)
        if (conv[d] > best) best = conv[d], at = d;
    y[i] = relu && best < 0.0f ? 0.0f : best;
    if (argmax) argmax[i] = relu && !(best > 0.0f) ? -1.0f : float(at);
}
}  // namespace

void conv_pool_fwd(const ConvShape* s, const float* xpad, const float* w, const float*, const float* bias, float* y,
                   float* argmax, int relu) {
    const int L = s->lanes, out_h = s->oh / 2, out_w = s->ow / 2;
    for (int o = 0; o < s->oc; ++o)
        for (int py = 0; py < out_h; ++py)
            for (int px = 0; px < out_w; ++px)
                for (int l = 0; l < L; ++l) {
                    float conv[4];
                    for (int d = 0; d < 4; ++d)
                        conv[d] = conv_at(s, xpad, w, bias, o, 2 * py + d / 2, 2 * px + d % 2, l);
                    store_pooled(conv, relu, ((ptrdiff_t(o) * out_h + py) * out_w + px) * L + l, y, argmax);
                }
}

namespace {
// A stride-1 KxK convolution through Winograd's F(2x2, 2x2) (K = 2) or F(2x2, 5x5) (K = 5), over th x tw output tiles
// of 2x2: the tile's (K+1)x(K+1) input window of every input channel (rows and columns past xpad [ic][oh+K-1][ow+K-1]
// [L] read as zero) transformed into `tile` [ic][(K+1)^2][L], then per output channel the elementwise products with u
// summed over the input channels (m) and transformed back into the tile's 2x2 convolution plus bias:
// out(o, ty, tx, l, conv[4]).
template <int K, class Out>
void winograd_tiles(const ConvShape* s, const float* xpad, const float* u, const float* bias, int th, int tw,
                    float* tile, Out&& out) {
    constexpr int A = K + 1, N = A * A;
    const int L = s->lanes, ph = s->oh + K - 1, pw = s->ow + K - 1;
    for (int ty = 0; ty < th; ++ty)
        for (int tx = 0; tx < tw; ++tx) {
            for (int c = 0; c < s->ic; ++c)
                for (int l = 0; l < L; ++l) {
                    float d[A][A], v[N];
                    for (int r = 0; r < A; ++r)
                        for (int q = 0; q < A; ++q) {
                            const int y = 2 * ty + r, x = 2 * tx + q;
                            d[r][q] = y < ph && x < pw ? xpad[((ptrdiff_t(c) * ph + y) * pw + x) * L + l] : 0.0f;
                        }
                    if constexpr (K == 2) winograd_input_tile(d, v);
                    else winograd5_input_tile(d, v);
                    for (int i = 0; i < N; ++i) tile[(c * N + i) * L + l] = v[i];
                }
            for (int o = 0; o < s->oc; ++o)
                for (int l = 0; l < L; ++l) {
                    float m[N] = {}, conv[4];
                    for (int c = 0; c < s->ic; ++c) {
                        const float* uc = u + (ptrdiff_t(o) * s->ic + c) * N;
                        for (int i = 0; i < N; ++i) m[i] += uc[i] * tile[(c * N + i) * L + l];
                    }
                    if constexpr (K == 2) winograd_output_tile(m, conv);
                    else winograd5_output_tile(m, conv);
                    for (float& v : conv) v += bias ? bias[o] : 0.0f;
                    out(o, ty, tx, l, conv);
                }
        }
}
}  // namespace

// conv_pool_fwd through Winograd: one tile per pooling window.
void conv_pool_fwd_winograd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                            float* argmax, int relu, float* tile) {
    const int L = s->lanes, out_h = s->oh / 2, out_w = s->ow / 2;
    const auto pooled = [&](int o, int py, int px, int l, const float* conv) {
        store_pooled(conv, relu, ((ptrdiff_t(o) * out_h + py) * out_w + px) * L + l, y, argmax);
    };
    if (s->kh == 5) winograd_tiles<5>(s, xpad, u, bias, out_h, out_w, tile, pooled);
    else winograd_tiles<2>(s, xpad, u, bias, out_h, out_w, tile, pooled);
}

// The input gradient of a fused 5x5 layer through F(2x2, 5x5) backwards, one lane and one pooling window at a time
// (row-major): the products' gradient of every output channel into work [oc][36], then per input channel their sum
// times u over the output channels (in channel order), transformed into the window's input gradient.
void conv_pool_dx_winograd(const ConvShape* s, const float* g, int bh, int bw, const float* u, float* dx,
                           float* work) {
    const int L = s->lanes;
    const ptrdiff_t gh = s->oh + 2 * bh, gw = s->ow + 2 * bw;
    std::fill(dx, dx + ptrdiff_t(s->ic) * s->ih * s->iw * L, 0.0f);
    for (int ty = 0; ty < s->oh / 2; ++ty)
        for (int tx = 0; tx < s->ow / 2; ++tx)
            for (int l = 0; l < L; ++l) {
                for (int o = 0; o < s->oc; ++o) {
                    float gt[4];
                    for (int d = 0; d < 4; ++d)
                        gt[d] = g[((o * gh + bh + 2 * ty + d / 2) * gw + bw + 2 * tx + d % 2) * L + l];
                    winograd5_grad_tile(gt, work + ptrdiff_t(o) * 36);
                }
                for (int c = 0; c < s->ic; ++c) {
                    float dv[36] = {}, x[36];
                    for (int o = 0; o < s->oc; ++o) {
                        const float* uo = u + (ptrdiff_t(o) * s->ic + c) * 36;
                        for (int i = 0; i < 36; ++i) dv[i] += uo[i] * work[o * 36 + i];
                    }
                    winograd5_input_tile_t(dv, x);
                    for (int r = 0; r < 6; ++r)
                        for (int q = 0; q < 6; ++q)
                            dx[((ptrdiff_t(c) * s->ih + 2 * ty + r) * s->iw + 2 * tx + q) * L + l] += x[6 * r + q];
                }
            }
}

// conv_direct_fwd for 2x2 kernels through Winograd: y [oc][oh][ow][L], the last tile row and column cut to the output.
void conv_winograd_fwd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                       float* tile) {
    const int L = s->lanes;
    winograd_tiles<2>(s, xpad, u, bias, (s->oh + 1) / 2, (s->ow + 1) / 2, tile,
                   [&](int o, int ty, int tx, int l, const float* conv) {
                       for (int d = 0; d < 4; ++d) {
                           const int oy = 2 * ty + d / 2, ox = 2 * tx + d % 2;
                           if (oy >= s->oh || ox >= s->ow) continue;
                           y[((ptrdiff_t(o) * s->oh + oy) * s->ow + ox) * L + l] = conv[d];
                       }
                   });
}

// argmax, dy [oc][oh/2][ow/2][L] -> g [oc][oh][ow][L] inside a border (bh, bw): dy at the argmax position of each
// window (none where argmax is -1), zero elsewhere and on an odd last row or column, which the pooling dropped.
void conv_pool_route(const ConvShape* s, const float* argmax, const float* dy, float* g, int bh, int bw) {
    const int L = s->lanes, out_h = s->oh / 2, out_w = s->ow / 2;
    const int gh = s->oh + 2 * bh, gw = s->ow + 2 * bw;
    for (int o = 0; o < s->oc; ++o)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < L; ++l) {
                    const int py = oy / 2, px = ox / 2, d = (oy % 2) * 2 + ox % 2;
                    const ptrdiff_t i = ((ptrdiff_t(o) * out_h + py) * out_w + px) * L + l;
                    const bool routed = py < out_h && px < out_w && int(argmax[i]) == d;
                    g[((ptrdiff_t(o) * gh + oy + bh) * gw + ox + bw) * L + l] = routed ? dy[i] : 0.0f;
                }
}

namespace {
// Each pooled gradient added, times the input, into dw and, times the weights, into dx (either may be null) at the
// window position its argmax names: lanes, then output channels, then windows in order. x: the input with its
// border, [ic][oh+kh-1][ow+kw-1][L] (stride 1), as dx (which has none where conv_pool_bwd_sparse takes it).
void pooled_gradient_sums(const ConvShape* s, const float* x, const float* w, const float* argmax, const float* dy,
                          float* dw, float* db, float* dx) {
    const int L = s->lanes, out_h = s->oh / 2, out_w = s->ow / 2, taps = s->kh * s->kw;
    const int xh = s->oh + s->kh - 1, xw = s->ow + s->kw - 1;
    if (dw) std::fill(dw, dw + size_t(s->oc) * s->ic * taps, 0.0f);
    if (db) std::fill(db, db + s->oc, 0.0f);
    if (dx) std::fill(dx, dx + size_t(s->ic) * xh * xw * L, 0.0f);
    for (int l = 0; l < L; ++l)
        for (int o = 0; o < s->oc; ++o)
            for (int py = 0; py < out_h; ++py)
                for (int px = 0; px < out_w; ++px) {
                    const ptrdiff_t i = ((ptrdiff_t(o) * out_h + py) * out_w + px) * L + l;
                    const int a = int(argmax[i]);
                    if (a < 0) continue;
                    const float g = dy[i];
                    const int y0 = 2 * py + a / 2, x0 = 2 * px + a % 2;
                    if (db) db[o] += g;
                    for (int c = 0; c < s->ic; ++c)
                        for (int ky = 0; ky < s->kh; ++ky)
                            for (int kx = 0; kx < s->kw; ++kx) {
                                const ptrdiff_t at = ((ptrdiff_t(c) * xh + y0 + ky) * xw + x0 + kx) * L + l;
                                const ptrdiff_t t = (ptrdiff_t(o) * s->ic + c) * taps + ky * s->kw + kx;
                                if (dw) dw[t] += g * x[at];
                                if (dx) dx[at] += g * w[t];
                            }
                }
}
}  // namespace

void conv_pool_bwd_sparse(const ConvShape* s, const float* xpad, const float* w, const float* argmax,
                          const float* dy, float* dw, float* db, float* dx, float*) {
    pooled_gradient_sums(s, xpad, w, argmax, dy, dw, db, dx);
}

// xpad as above; argmax, dy [oc][oh/2][ow/2][L] -> dw [oc][ic][kh][kw] and db [oc] (overwritten, either may be
// null): conv_direct_dw and the bias gradient of the convolution's gradient g (conv_pool_route).
void conv_pool_dw(const ConvShape* s, const float* xpad, const float* argmax, const float* dy, float* dw,
                  float* db) {
    const ptrdiff_t plane = ptrdiff_t(s->oh) * s->ow * s->lanes;
    std::vector<float> g(size_t(s->oc) * size_t(plane));  // [oc][oh][ow][L]
    conv_pool_route(s, argmax, dy, g.data(), 0, 0);
    if (dw) conv_direct_dw(s, xpad, g.data(), 0, 0, dw);
    for (int o = 0; db && o < s->oc; ++o) {
        float acc = 0.0f;
        for (ptrdiff_t i = 0; i < plane; ++i) acc += g[size_t(o * plane + i)];
        db[o] = acc;
    }
}

}  // namespace lenet::ref

namespace lenet {

namespace {
// out = G x for one line of five: G's rows in closed form (see kernels.h), in double, by multiplications (divisions
// made this transform of LeNet-5's second layer take 2% of its training step, on one thread while the other waits).
void winograd5_weight_line(const double x[5], double out[6]) {
    constexpr double third = 1.0 / 3, sixth = 1.0 / 6, twelfth = 1.0 / 12, twentyfourth = 1.0 / 24;
    const double even = x[0] + x[2] + x[4], odd = x[1] + x[3];
    const double a = x[0] * twentyfourth + x[2] * sixth + x[4] * (2 * third), b = x[1] * twelfth + x[3] * third;
    out[0] = x[0] * 0.25, out[1] = -(even + odd) * sixth, out[2] = -(even - odd) * sixth;
    out[3] = a + b, out[4] = a - b, out[5] = x[4];
}
}  // namespace

void winograd_5x5_weights(int oc, int ic, const float* w, float* u) {
    for (ptrdiff_t p = 0; p < ptrdiff_t(oc) * ic; ++p, w += 25, u += 36) {
        double t[6][5];  // G w, one column of w at a time
        for (int x = 0; x < 5; ++x) {
            double column[5], out[6];
            for (int k = 0; k < 5; ++k) column[k] = w[k * 5 + x];
            winograd5_weight_line(column, out);
            for (int i = 0; i < 6; ++i) t[i][x] = out[i];
        }
        for (int i = 0; i < 6; ++i) {  // (G w) G^T, one row at a time
            double out[6];
            winograd5_weight_line(t[i], out);
            for (int j = 0; j < 6; ++j) u[i * 6 + j] = float(out[j]);
        }
    }
}

}  // namespace lenet
