// Direct convolution with the 16 samples of a block in the vector lanes (stride 1, pre-padded input; s->ih and s->ph
// say which rows of it are the zero border, which are skipped):
// every weight is one broadcast scalar, no im2col buffer is written, rows of any width waste no lane.
#pragma once
#include <stddef.h>

#include "../kernels.h"

namespace lenet::simd {
namespace {

constexpr int kDirectLanes = 16;

// Register tile: OCB output channels x PXB output pixels of one row x LV vectors (16 lanes).
template <class V> constexpr int direct_ocb() { return V::W >= 16 ? 4 : 2; }
template <class V> constexpr int direct_pxb() {
    return V::acc_budget / (direct_ocb<V>() * (kDirectLanes / V::W)) - (V::W >= 16 ? 1 : 0);  // 5 / 3 / ...
}

template <class V, int OCB, int PXB>
void conv_direct_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int o0,
                      int oy, int ox0) {
    constexpr int LV = kDirectLanes / V::W, L = kDirectLanes;
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1, wstride = ptrdiff_t(s->ic) * s->kh * s->kw;
    typename V::T acc[OCB][PXB][LV];
    for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        for (int p = 0; p < PXB; ++p)
            for (int v = 0; v < LV; ++v) acc[o][p][v] = b;
    }
    // Rows of xpad inside the zero border contribute nothing: only ky with ph <= oy + ky < ph + ih.
    const int ky_lo = s->ph - oy > 0 ? s->ph - oy : 0;
    const int ky_hi = s->ph + s->ih - oy < s->kh ? s->ph + s->ih - oy : s->kh;
    for (int c = 0; c < s->ic; ++c)
        for (int ky = ky_lo; ky < ky_hi; ++ky) {
            const float* row = xpad + ((c * ph + oy + ky) * pw + ox0) * L;
            const float* wrow = w + o0 * wstride + (c * s->kh + ky) * s->kw;
            for (int kx = 0; kx < s->kw; ++kx) {
                typename V::T wv[OCB];
                for (int o = 0; o < OCB; ++o) wv[o] = V::set1(wrow[o * wstride + kx]);
                for (int p = 0; p < PXB; ++p)
                    for (int v = 0; v < LV; ++v) {
                        const typename V::T xv = V::load(row + (p + kx) * L + v * V::W);
                        for (int o = 0; o < OCB; ++o) acc[o][p][v] = V::fmadd(wv[o], xv, acc[o][p][v]);
                    }
            }
        }
    for (int o = 0; o < OCB; ++o)
        for (int p = 0; p < PXB; ++p)
            for (int v = 0; v < LV; ++v)
                V::store(y + ((ptrdiff_t(o0 + o) * s->oh + oy) * s->ow + ox0 + p) * L + v * V::W, acc[o][p][v]);
}

template <class V, int OCB, int PXB>
void conv_direct_px(int pxb, const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y,
                    int o0, int oy, int ox0) {
    if constexpr (PXB > 0) {
        if (pxb == PXB) conv_direct_tile<V, OCB, PXB>(s, xpad, w, bias, y, o0, oy, ox0);
        else conv_direct_px<V, OCB, PXB - 1>(pxb, s, xpad, w, bias, y, o0, oy, ox0);
    }
}
template <class V, int OCB>
void conv_direct_oc(int ocb, int pxb, const ConvShape* s, const float* xpad, const float* w, const float* bias,
                    float* y, int o0, int oy, int ox0) {
    if constexpr (OCB > 0) {
        if (ocb == OCB) conv_direct_px<V, OCB, direct_pxb<V>()>(pxb, s, xpad, w, bias, y, o0, oy, ox0);
        else conv_direct_oc<V, OCB - 1>(ocb, pxb, s, xpad, w, bias, y, o0, oy, ox0);
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][16], w [oc][ic][kh][kw] -> y [oc][oh][ow][16].
template <class V>
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y) {
    constexpr int OCB = direct_ocb<V>(), PXB = direct_pxb<V>();
    for (int o0 = 0; o0 < s->oc; o0 += OCB) {
        const int ocb = s->oc - o0 < OCB ? s->oc - o0 : OCB;
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox0 = 0; ox0 < s->ow; ox0 += PXB) {
                const int pxb = s->ow - ox0 < PXB ? s->ow - ox0 : PXB;
                conv_direct_oc<V, OCB>(ocb, pxb, s, xpad, w, bias, y, o0, oy, ox0);
            }
    }
}

// ---- weight gradient: dw[o][c][ky][kx] = sum_{y,x,lanes} dy[o][y][x] * xpad[c][y+ky][x+kx] ----------------------
// Register tile: OCB output channels x KXB kernel columns x LV vectors, one (c, ky) at a time; the accumulators are
// vectors of per-lane partial sums, reduced by one horizontal sum per weight at the end.
template <class V> constexpr int direct_dw_kxb() {
    return V::acc_budget / (direct_ocb<V>() * (kDirectLanes / V::W)) - (V::W >= 16 ? 1 : 0);  // 5 / 3
}

template <class V, int OCB, int KXB>
void conv_direct_dw_tile(const ConvShape* s, const float* xpad, const float* dy, float* dw, int o0, int c, int ky,
                         int kx0) {
    constexpr int LV = kDirectLanes / V::W, L = kDirectLanes;
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1, plane = ptrdiff_t(s->oh) * s->ow * L;
    typename V::T acc[OCB][KXB][LV];
    for (int o = 0; o < OCB; ++o)
        for (int k = 0; k < KXB; ++k)
            for (int v = 0; v < LV; ++v) acc[o][k][v] = V::zero();
    for (int oy = 0; oy < s->oh; ++oy) {
        const float* xrow = xpad + ((c * ph + oy + ky) * pw + kx0) * L;
        const float* dyrow = dy + (ptrdiff_t(o0) * s->oh + oy) * s->ow * L;
        for (int ox = 0; ox < s->ow; ++ox)
            for (int v = 0; v < LV; ++v) {
                typename V::T g[OCB];
                for (int o = 0; o < OCB; ++o) g[o] = V::load(dyrow + o * plane + ox * L + v * V::W);
                for (int k = 0; k < KXB; ++k) {
                    const typename V::T xv = V::load(xrow + (ox + k) * L + v * V::W);
                    for (int o = 0; o < OCB; ++o) acc[o][k][v] = V::fmadd(g[o], xv, acc[o][k][v]);
                }
            }
    }
    for (int o = 0; o < OCB; ++o)
        for (int k = 0; k < KXB; ++k) {
            typename V::T sum = acc[o][k][0];
            for (int v = 1; v < LV; ++v) sum = V::add(sum, acc[o][k][v]);
            dw[(((o0 + o) * s->ic + c) * s->kh + ky) * s->kw + kx0 + k] = V::hsum(sum);
        }
}

template <class V, int OCB, int KXB>
void conv_direct_dw_kx(int kxb, const ConvShape* s, const float* xpad, const float* dy, float* dw, int o0, int c,
                       int ky, int kx0) {
    if constexpr (KXB > 0) {
        if (kxb == KXB) conv_direct_dw_tile<V, OCB, KXB>(s, xpad, dy, dw, o0, c, ky, kx0);
        else conv_direct_dw_kx<V, OCB, KXB - 1>(kxb, s, xpad, dy, dw, o0, c, ky, kx0);
    }
}
template <class V, int OCB>
void conv_direct_dw_oc(int ocb, int kxb, const ConvShape* s, const float* xpad, const float* dy, float* dw, int o0,
                       int c, int ky, int kx0) {
    if constexpr (OCB > 0) {
        if (ocb == OCB) conv_direct_dw_kx<V, OCB, direct_dw_kxb<V>()>(kxb, s, xpad, dy, dw, o0, c, ky, kx0);
        else conv_direct_dw_oc<V, OCB - 1>(ocb, kxb, s, xpad, dy, dw, o0, c, ky, kx0);
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][16], dy [oc][oh][ow][16] -> dw [oc][ic][kh][kw] (overwritten).
template <class V>
void conv_direct_dw(const ConvShape* s, const float* xpad, const float* dy, float* dw) {
    constexpr int OCB = direct_ocb<V>(), KXB = direct_dw_kxb<V>();
    for (int o0 = 0; o0 < s->oc; o0 += OCB) {
        const int ocb = s->oc - o0 < OCB ? s->oc - o0 : OCB;
        for (int c = 0; c < s->ic; ++c)
            for (int ky = 0; ky < s->kh; ++ky)
                for (int kx0 = 0; kx0 < s->kw; kx0 += KXB) {
                    const int kxb = s->kw - kx0 < KXB ? s->kw - kx0 : KXB;
                    conv_direct_dw_oc<V, OCB>(ocb, kxb, s, xpad, dy, dw, o0, c, ky, kx0);
                }
    }
}

}  // namespace
}  // namespace lenet::simd
