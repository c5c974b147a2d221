// Direct convolution with the 16 samples of a block in the vector lanes (stride 1, pre-padded input; s->ih and s->ph
// say which rows of it are the zero border, which are skipped):
// every weight is one broadcast scalar, no im2col buffer is written, rows of any width waste no lane.
#pragma once
#include <stddef.h>

#include "../kernels.h"
#include "tile.h"

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
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v) acc[o][p][v] = b;
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
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) wv[o] = V::set1(wrow[o * wstride + kx]);
                LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
                    LENET_TILE_LOOP for (int v = 0; v < LV; ++v) {
                        const typename V::T xv = V::load(row + (p + kx) * L + v * V::W);
                        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) acc[o][p][v] = V::fmadd(wv[o], xv, acc[o][p][v]);
                    }
            }
        }
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v)
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

// ---- one sample (lanes 1): vectorised along the output row -----------------------------------------------------
// Register tile: OCB output channels x NV vectors of one output row (ow pixels; the last vector may be partial).
// Every weight is one broadcast scalar; the input row is read at offset kx with unaligned loads.
constexpr int kRowMaxVectors = 4;
template <class V, int NV> constexpr int row_ocb() {
    return V::acc_budget / NV > 8 ? 8 : (V::acc_budget / NV < 1 ? 1 : V::acc_budget / NV);
}

// FULL: the last vector is whole (a compile-time choice keeps the accumulators in registers).
template <class V, int OCB, int NV, bool FULL>
void conv_row_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int o0,
                   int oy, int ox0, int n) {
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1, wstride = ptrdiff_t(s->ic) * s->kh * s->kw;
    const int tail = FULL ? V::W : n - (NV - 1) * V::W;  // pixels in the last vector, 1..W
    typename V::T acc[OCB][NV];
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[o][v] = b;
    }
    const int ky_lo = s->ph - oy > 0 ? s->ph - oy : 0;  // rows of the zero border contribute nothing
    const int ky_hi = s->ph + s->ih - oy < s->kh ? s->ph + s->ih - oy : s->kh;
    for (int c = 0; c < s->ic; ++c)
        for (int ky = ky_lo; ky < ky_hi; ++ky) {
            const float* row = xpad + (c * ph + oy + ky) * pw + ox0;
            const float* wrow = w + o0 * wstride + (c * s->kh + ky) * s->kw;
            for (int kx = 0; kx < s->kw; ++kx) {
                typename V::T xv[NV];
                LENET_TILE_LOOP for (int v = 0; v < NV - 1; ++v) xv[v] = V::load(row + kx + v * V::W);
                xv[NV - 1] = FULL ? V::load(row + kx + (NV - 1) * V::W) : V::load_n(row + kx + (NV - 1) * V::W, tail);
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
                    const typename V::T wv = V::set1(wrow[o * wstride + kx]);
                    LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[o][v] = V::fmadd(wv, xv[v], acc[o][v]);
                }
            }
        }
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        float* out = y + (ptrdiff_t(o0 + o) * s->oh + oy) * s->ow + ox0;
        LENET_TILE_LOOP for (int v = 0; v < NV - 1; ++v) V::store(out + v * V::W, acc[o][v]);
        if (FULL) V::store(out + (NV - 1) * V::W, acc[o][NV - 1]);
        else V::store_n(out + (NV - 1) * V::W, acc[o][NV - 1], tail);
    }
}

template <class V, int OCB, int NV>
void conv_row_oc(int ocb, const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int o0,
                 int oy, int ox0, int n) {
    if constexpr (OCB > 0) {
        if (ocb != OCB) return conv_row_oc<V, OCB - 1, NV>(ocb, s, xpad, w, bias, y, o0, oy, ox0, n);
        if (n == NV * V::W) conv_row_tile<V, OCB, NV, true>(s, xpad, w, bias, y, o0, oy, ox0, n);
        else conv_row_tile<V, OCB, NV, false>(s, xpad, w, bias, y, o0, oy, ox0, n);
    }
}

template <class V, int NV>
void conv_row_nv(int nv, const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int ox0,
                 int n) {
    if constexpr (NV > 0) {
        if (nv != NV) return conv_row_nv<V, NV - 1>(nv, s, xpad, w, bias, y, ox0, n);
        constexpr int OCB = row_ocb<V, NV>();
        for (int o0 = 0; o0 < s->oc; o0 += OCB)
            for (int oy = 0; oy < s->oh; ++oy)
                conv_row_oc<V, OCB, NV>(s->oc - o0 < OCB ? s->oc - o0 : OCB, s, xpad, w, bias, y, o0, oy, ox0, n);
    }
}

// xpad [ic][oh+kh-1][ow+kw-1], w [oc][ic][kh][kw] -> y [oc][oh][ow], in chunks of up to 4 vectors of a row.
template <class V>
void conv_row_fwd(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y) {
    constexpr int chunk = kRowMaxVectors * V::W;
    for (int ox0 = 0; ox0 < s->ow; ox0 += chunk) {
        const int n = s->ow - ox0 < chunk ? s->ow - ox0 : chunk;
        conv_row_nv<V, kRowMaxVectors>((n + V::W - 1) / V::W, s, xpad, w, bias, y, ox0, n);
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw] -> y [oc][oh][ow][L], L = 16 (or 1: conv_row_fwd).
template <class V>
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y) {
    if (s->lanes == 1) return conv_row_fwd<V>(s, xpad, w, bias, y);
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
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int k = 0; k < KXB; ++k)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v) acc[o][k][v] = V::zero();
    for (int oy = 0; oy < s->oh; ++oy) {
        const float* xrow = xpad + ((c * ph + oy + ky) * pw + kx0) * L;
        const float* dyrow = dy + (ptrdiff_t(o0) * s->oh + oy) * s->ow * L;
        for (int ox = 0; ox < s->ow; ++ox)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v) {
                typename V::T g[OCB];
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) g[o] = V::load(dyrow + o * plane + ox * L + v * V::W);
                LENET_TILE_LOOP for (int k = 0; k < KXB; ++k) {
                    const typename V::T xv = V::load(xrow + (ox + k) * L + v * V::W);
                    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) acc[o][k][v] = V::fmadd(g[o], xv, acc[o][k][v]);
                }
            }
    }
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int k = 0; k < KXB; ++k) {
            typename V::T sum = acc[o][k][0];
            LENET_TILE_LOOP for (int v = 1; v < LV; ++v) sum = V::add(sum, acc[o][k][v]);
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
