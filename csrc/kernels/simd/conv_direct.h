// Direct convolution with the 16 samples of a block in the vector lanes (stride 1, pre-padded input; s->ih and s->ph
// say which rows of it are the zero border, which are skipped):
// every weight is one broadcast scalar, no im2col buffer is written, rows of any width waste no lane.
#pragma once
#include <stddef.h>

#include "../kernels.h"
#include "../ref/ref.h"
#include "tile.h"

namespace lenet::simd {
namespace {

constexpr int kDirectLanes = 16;

// The kernel rows [lo, hi) whose input row oy + ky lies inside the image: rows of the zero border contribute nothing.
struct KernelRows {
    int lo, hi;
};
inline KernelRows image_rows(const ConvShape* s, int oy) {
    return {s->ph - oy > 0 ? s->ph - oy : 0, s->ph + s->ih - oy < s->kh ? s->ph + s->ih - oy : s->kh};
}
// The same for kernel columns and a tile of n pixels from ox0: [lo, hi) where at least one of them reads inside the
// image. (The input gradient, a convolution of the output gradient padded by k - 1, has as many border columns as
// rows.)
inline KernelRows image_columns(const ConvShape* s, int ox0, int n) {
    const int lo = s->pw - (ox0 + n - 1), hi = s->pw + s->iw - ox0;
    return {lo > 0 ? lo : 0, hi < s->kw ? hi : s->kw};
}

// A tile whose window lies wholly inside the image may take the kernel's size K (square) at compile time, its loops
// over the window then unrolled: K = 0 reads the size and the image bounds at run time. Only 2x2 (the
// MNIST-CoreML-Training graph's second layer) and 3x3 are compiled unrolled: each is a tile function of its own per
// ISA, and the library's size is a goal. Measured on one thread of the Intel VM, AVX-512, 16 lanes: that 2x2 layer's
// forward 1.1x and input gradient 1.13x faster, a 32 -> 32 channel 3x3 1.07x, and that 2x2 layer fused with its
// pooling (conv_pool16_tile) 1.1x; 5x5 (LeNet-5) gained 3-4% on AVX-512 and lost 5% on AVX2, so it is not unrolled.
// An ISA with Winograd's kernels (winograd.h) takes that 2x2 layer through them (its fused forward and its input
// gradient; its backward through the pooling's sparsity), so there only 3x3 is unrolled.
template <class V> constexpr bool has_winograd() { return V::W == 16; }  // AVX-512
template <class V, class F>
bool with_unrolled_kernel(const ConvShape* s, F&& f) {
    if (s->kh != s->kw) return false;
    switch (s->kh) {
        case 2:
            if constexpr (has_winograd<V>()) return false;
            else f(Size<2>{});
            return true;
        case 3: f(Size<3>{}); return true;
        default: return false;
    }
}
// f(k) for k in [0, K) unrolled (K > 0), else for k in [lo, hi).
template <int K, class F>
inline void for_window(KernelRows range, F&& f) {
    if constexpr (K > 0) {
        LENET_TILE_LOOP for (int k = 0; k < K; ++k) f(k);
    } else {
        for (int k = range.lo; k < range.hi; ++k) f(k);
    }
}
// True when every tap of a tile (oy..oy+rows-1, ox0..ox0+n-1) reads inside the image.
inline bool window_inside(const ConvShape* s, int oy, int rows, int ox0, int n) {
    const KernelRows r0 = image_rows(s, oy), r1 = image_rows(s, oy + rows - 1), c = image_columns(s, ox0, n);
    return r0.lo == 0 && r1.hi == s->kh && c.lo == 0 && c.hi == s->kw;
}

// Register tile: OCB output channels x PXB output pixels of one row x LV vectors (16 lanes).
template <class V> constexpr int direct_ocb() { return V::W >= 16 ? 4 : 2; }
template <class V> constexpr int direct_pxb() {
    return V::acc_budget / (direct_ocb<V>() * (kDirectLanes / V::W)) - (V::W >= 16 ? 1 : 0);  // 5 / 3 / ...
}

// The forward's own tiles. AVX2 (12 accumulators, two vectors of lanes): 2 channels x 2 pixels. With 2 x 3, gcc's
// predictive commoning keeps the loads that kernel column kx + 1 shares with column kx in registers, which pushed
// accumulators onto the stack (measured 20% slower). AVX-512: 4 x 5. (A 6 x 3 tile for channels that split into 6s
// but not 4s made LeNet-5's second layer's input gradient 17% faster; on AVX-512 that gradient now goes through the
// pooling's sparsity (conv_pool_bwd_sparse), and the tile was taken out for the library's size.)
template <class V> constexpr int direct_fwd_ocb() { return V::W == 8 ? 2 : direct_ocb<V>(); }
template <class V> constexpr int direct_fwd_pxb() { return V::W == 8 ? 2 : direct_pxb<V>(); }

template <class V, int OCB, int PXB, int K = 0>
LENET_TILE_FUNCTION
void conv_direct_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int o0,
                      int oy, int ox0) {
    constexpr int LV = kDirectLanes / V::W, L = kDirectLanes;
    const int kh = K ? K : s->kh, kw = K ? K : s->kw;
    const ptrdiff_t pw = s->ow + kw - 1, ph = s->oh + kh - 1, wstride = ptrdiff_t(s->ic) * kh * kw;
    typename V::T acc[OCB][PXB][LV];
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v) acc[o][p][v] = b;
    }
    const KernelRows rows = image_rows(s, oy), cols = image_columns(s, ox0, PXB);
    for (int c = 0; c < s->ic; ++c)
        for_window<K>(rows, [&](int ky) {
            const float* row = xpad + ((c * ph + oy + ky) * pw + ox0) * L;
            const float* wrow = w + o0 * wstride + (c * kh + ky) * kw;
            for_window<K>(cols, [&](int kx) {
                typename V::T wv[OCB];
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) wv[o] = V::set1(wrow[o * wstride + kx]);
                LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
                    LENET_TILE_LOOP for (int v = 0; v < LV; ++v) {
                        const typename V::T xv = V::load(row + (p + kx) * L + v * V::W);
                        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) acc[o][p][v] = V::fmadd(wv[o], xv, acc[o][p][v]);
                    }
            });
        });
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v)
                V::store(y + ((ptrdiff_t(o0 + o) * s->oh + oy) * s->ow + ox0 + p) * L + v * V::W, acc[o][p][v]);
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
    const KernelRows rows = image_rows(s, oy);
    for (int c = 0; c < s->ic; ++c)
        for (int ky = rows.lo; ky < rows.hi; ++ky) {
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

// ---- one sample, rows narrower than a vector and channels a multiple of one: vectorised along the channels ---------
// (LeNet-5's conv2: 10-pixel rows would fill 10 of 16 lanes, its 16 channels fill them all.) Register tile: PXB pixels
// of a row x OV vectors of output channels; the weights are first regrouped as wt[c][ky][kx][oc] so that each
// (c, ky, kx) step loads OV weight vectors and broadcasts one input pixel per tile pixel.
constexpr int kChannelMaxVectors = 4;
constexpr int kChannelMaxWeights = 8192;  // weights regrouped by the kernel itself live on the stack
template <class V, int OV> constexpr int channel_pxb() {
    return V::acc_budget / OV > 12 ? 12 : V::acc_budget / OV;
}

template <class V, int OV, int PXB>
void conv_channel_tile(const ConvShape* s, const float* xpad, const float* wt, const float* bias, float* out, int oy,
                       int ox0, int o0) {
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    typename V::T acc[PXB][OV];
    LENET_TILE_LOOP for (int v = 0; v < OV; ++v) {
        const typename V::T b = bias ? V::load(bias + o0 + v * V::W) : V::zero();
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p) acc[p][v] = b;
    }
    const KernelRows rows = image_rows(s, oy);
    for (int c = 0; c < s->ic; ++c)
        for (int ky = rows.lo; ky < rows.hi; ++ky) {
            const float* row = xpad + (c * ph + oy + ky) * pw + ox0;
            const float* wrow = wt + ((ptrdiff_t(c) * s->kh + ky) * s->kw) * s->oc + o0;
            for (int kx = 0; kx < s->kw; ++kx) {
                typename V::T wv[OV];
                LENET_TILE_LOOP for (int v = 0; v < OV; ++v) wv[v] = V::load(wrow + kx * s->oc + v * V::W);
                LENET_TILE_LOOP for (int p = 0; p < PXB; ++p) {
                    const typename V::T xv = V::set1(row[p + kx]);
                    LENET_TILE_LOOP for (int v = 0; v < OV; ++v) acc[p][v] = V::fmadd(wv[v], xv, acc[p][v]);
                }
            }
        }
    LENET_TILE_LOOP for (int p = 0; p < PXB; ++p)  // out [pixel][oc] from ox0 on, transposed by the caller
        LENET_TILE_LOOP for (int v = 0; v < OV; ++v) V::store(out + p * s->oc + o0 + v * V::W, acc[p][v]);
}

// True when the channel-vectorised path serves this one-sample shape.
template <class V>
bool conv_channels_fit(const ConvShape* s) {
    return s->ow < V::W && s->oc % V::W == 0 && s->oc <= kChannelMaxVectors * V::W &&
           s->oc * s->ic * s->kh * s->kw <= kChannelMaxWeights;
}

// One output row as the channel tiles write it, row [width][oc], into its place in y [oc][height][width].
inline void store_channels_last_row(const float* row, int oc, int height, int width, int y_row, float* y) {
    for (int o = 0; o < oc; ++o)
        for (int x = 0; x < width; ++x) y[(ptrdiff_t(o) * height + y_row) * width + x] = row[x * oc + o];
}

// w_cl: the weights channels-last (kernels.h), or null to regroup them here.
template <class V>
void conv_channel_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                      float* y) {
    float regrouped[kChannelMaxWeights];
    if (!w_cl) conv_weights_channels_last(s, w, regrouped);
    const float* wt = w_cl ? w_cl : regrouped;
    float out[kChannelMaxVectors * V::W * V::W];  // one output row [ow][oc] (ow < W), then transposed into y
    with_size<kChannelMaxVectors>(s->oc / V::W, [&](auto ov) {
        constexpr int OV = decltype(ov)::value, PXB = channel_pxb<V, OV>();
        for (int oy = 0; oy < s->oh; ++oy) {
            for (int ox0 = 0; ox0 < s->ow; ox0 += PXB)
                with_size<PXB>(s->ow - ox0 < PXB ? s->ow - ox0 : PXB, [&](auto p) {
                    conv_channel_tile<V, OV, decltype(p)::value>(s, xpad, wt, bias, out + ptrdiff_t(ox0) * s->oc, oy,
                                                                 ox0, 0);
                });
            store_channels_last_row(out, s->oc, s->oh, s->ow, oy, y);
        }
    });
}

// xpad [ic][oh+kh-1][ow+kw-1], w [oc][ic][kh][kw] -> y [oc][oh][ow], in chunks of up to 4 vectors of a row (or along
// the channels, for narrow rows).
template <class V>
void conv_row_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                  float* y) {
    if (conv_channels_fit<V>(s)) return conv_channel_fwd<V>(s, xpad, w, w_cl, bias, y);
    constexpr int chunk = kRowMaxVectors * V::W;
    for (int ox0 = 0; ox0 < s->ow; ox0 += chunk) {
        const int n = s->ow - ox0 < chunk ? s->ow - ox0 : chunk;
        with_size<kRowMaxVectors>((n + V::W - 1) / V::W, [&](auto nv) {
            constexpr int NV = decltype(nv)::value, OCB = row_ocb<V, NV>();
            for (int o0 = 0; o0 < s->oc; o0 += OCB)
                for (int oy = 0; oy < s->oh; ++oy)
                    with_size<OCB>(s->oc - o0 < OCB ? s->oc - o0 : OCB, [&](auto o) {
                        constexpr int O = decltype(o)::value;
                        if (n == NV * V::W) conv_row_tile<V, O, NV, true>(s, xpad, w, bias, y, o0, oy, ox0, n);
                        else conv_row_tile<V, O, NV, false>(s, xpad, w, bias, y, o0, oy, ox0, n);
                    });
        });
    }
}

// ---- one sample, fused with a 2x2 stride-2 max pooling and an optional ReLU: y [oc][oh/2][ow/2] ----------------
// The convolution's output never reaches memory: the tiles above, over the two output rows of one pooled row, end
// with a vertical max of the two rows, V::pairmax of neighbours along the row, and the ReLU (which commutes with the
// max). Each conv sum is accumulated in the same order as conv_row_fwd / conv_channel_fwd. An odd last row or
// column is dropped, as the pooling drops it.

// Pooled row tile: OCB channels x 2 rows x NV vectors of conv pixels (up to 2 vectors: 2W pixels, W pooled);
// the two rows share each broadcast weight.
constexpr int kPoolRowMaxVectors = 2;
template <class V, int NV> constexpr int pool_row_ocb() {
    return V::acc_budget / (2 * NV) > 8 ? 8 : (V::acc_budget / (2 * NV) < 1 ? 1 : V::acc_budget / (2 * NV));
}

// m: NV vectors of conv pixels, already max-ed over the two rows -> `pooled` pixels of out (relu: clamped at 0).
template <class V, int NV>
void store_pooled_row(const typename V::T* m, float* out, int pooled, int relu) {
    LENET_TILE_LOOP for (int v = 0; v < NV; v += 2) {
        typename V::T p = V::pairmax(m[v], m[v + 1 < NV ? v + 1 : v]);
        if (relu) p = V::max(p, V::zero());
        const int first = v / 2 * V::W, left = pooled - first;
        if (left >= V::W) V::store(out + first, p);
        else if (left > 0) V::store_n(out + first, p, left);
    }
}

template <class V, int OCB, int NV, bool FULL>
LENET_TILE_FUNCTION
void conv_row_pool_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y, int o0,
                        int py, int ox0, int n, int relu) {
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1, wstride = ptrdiff_t(s->ic) * s->kh * s->kw;
    const int tail = FULL ? V::W : n - (NV - 1) * V::W;  // conv pixels in the last vector, 1..W
    const int oy = 2 * py, out_h = s->oh / 2, out_w = s->ow / 2;
    typename V::T acc[2][OCB][NV];
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[0][o][v] = acc[1][o][v] = b;
    }
    // Kernel rows that reach the image for either output row (a border row adds an exact zero to the other).
    const KernelRows r0 = image_rows(s, oy), r1 = image_rows(s, oy + 1);
    const int lo = r1.lo < r0.lo ? r1.lo : r0.lo, hi = r0.hi > r1.hi ? r0.hi : r1.hi;
    for (int c = 0; c < s->ic; ++c)
        for (int ky = lo; ky < hi; ++ky) {
            const float* row = xpad + (c * ph + oy + ky) * pw + ox0;  // output row oy; row + pw: output row oy + 1
            const float* wrow = w + o0 * wstride + (c * s->kh + ky) * s->kw;
            for (int kx = 0; kx < s->kw; ++kx) {
                typename V::T x[2][NV];
                LENET_TILE_LOOP for (int r = 0; r < 2; ++r) {
                    LENET_TILE_LOOP for (int v = 0; v < NV - 1; ++v) x[r][v] = V::load(row + r * pw + kx + v * V::W);
                    x[r][NV - 1] = FULL ? V::load(row + r * pw + kx + (NV - 1) * V::W)
                                        : V::load_n(row + r * pw + kx + (NV - 1) * V::W, tail);
                }
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
                    const typename V::T wv = V::set1(wrow[o * wstride + kx]);
                    LENET_TILE_LOOP for (int r = 0; r < 2; ++r)
                        LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[r][o][v] = V::fmadd(wv, x[r][v], acc[r][o][v]);
                }
            }
        }
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        typename V::T m[NV];
        LENET_TILE_LOOP for (int v = 0; v < NV; ++v) m[v] = V::max(acc[0][o][v], acc[1][o][v]);
        store_pooled_row<V, NV>(m, y + (ptrdiff_t(o0 + o) * out_h + py) * out_w + ox0 / 2, n / 2, relu);
    }
}

// Pooled channel tile: 2 rows x PXB pixels (even, so that pooling pairs stay in one tile) x OV vectors of output
// channels. Each input row serves both output rows (at kernel rows ky and ky - 1), so one broadcast pixel feeds
// two weight vectors.
template <class V, int OV> constexpr int channel_pool_pxb() {
    return V::acc_budget / (2 * OV) > 12 ? 12 : (V::acc_budget / (2 * OV) < 2 ? 2 : V::acc_budget / (2 * OV) / 2 * 2);
}

// One input row r of the pair's window (output row oy at ky = r if TOP, output row oy + 1 at ky = r - 1 if BOTTOM).
template <class V, int OV, int PXB, bool TOP, bool BOTTOM>
inline void channel_pool_row(const ConvShape* s, const float* row, const float* wt0, const float* wt1,
                             typename V::T (&acc)[2][PXB][OV]) {
    for (int kx = 0; kx < s->kw; ++kx) {
        typename V::T w0[OV], w1[OV];
        LENET_TILE_LOOP for (int v = 0; v < OV; ++v) {
            if (TOP) w0[v] = V::load(wt0 + kx * s->oc + v * V::W);
            if (BOTTOM) w1[v] = V::load(wt1 + kx * s->oc + v * V::W);
        }
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p) {
            const typename V::T xv = V::set1(row[p + kx]);
            LENET_TILE_LOOP for (int v = 0; v < OV; ++v) {
                if (TOP) acc[0][p][v] = V::fmadd(w0[v], xv, acc[0][p][v]);
                if (BOTTOM) acc[1][p][v] = V::fmadd(w1[v], xv, acc[1][p][v]);
            }
        }
    }
}

template <class V, int OV, int PXB>
LENET_TILE_FUNCTION
void conv_channel_pool_tile(const ConvShape* s, const float* xpad, const float* wt, const float* bias, float* out,
                            int py, int ox0, int relu) {
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    const int oy = 2 * py;
    typename V::T acc[2][PXB][OV];
    LENET_TILE_LOOP for (int v = 0; v < OV; ++v) {
        const typename V::T b = bias ? V::load(bias + v * V::W) : V::zero();
        LENET_TILE_LOOP for (int p = 0; p < PXB; ++p) acc[0][p][v] = acc[1][p][v] = b;
    }
    // Input rows oy + r, r in [lo, hi): kernel row r of output row oy, kernel row r - 1 of output row oy + 1.
    const KernelRows r0 = image_rows(s, oy), r1 = image_rows(s, oy + 1);
    const int lo = r0.lo < r1.lo + 1 ? r0.lo : r1.lo + 1, hi = r0.hi > r1.hi + 1 ? r0.hi : r1.hi + 1;
    for (int c = 0; c < s->ic; ++c)
        for (int r = lo; r < hi; ++r) {
            const float* row = xpad + (c * ph + oy + r) * pw + ox0;
            const float* wt0 = wt + ((ptrdiff_t(c) * s->kh + r) * s->kw) * s->oc;
            const float* wt1 = r > 0 ? wt0 - ptrdiff_t(s->kw) * s->oc : wt0;  // read only when r > 0
            const bool top = r >= r0.lo && r < r0.hi, bottom = r - 1 >= r1.lo && r - 1 < r1.hi;
            if (top && bottom) channel_pool_row<V, OV, PXB, true, true>(s, row, wt0, wt1, acc);
            else if (top) channel_pool_row<V, OV, PXB, true, false>(s, row, wt0, wt1, acc);
            else if (bottom) channel_pool_row<V, OV, PXB, false, true>(s, row, wt0, wt1, acc);
        }
    LENET_TILE_LOOP for (int p = 0; p + 1 < PXB; p += 2)  // out [pooled pixel][oc] from ox0 / 2 on
        LENET_TILE_LOOP for (int v = 0; v < OV; ++v) {
            typename V::T m = V::max(V::max(acc[0][p][v], acc[0][p + 1][v]), V::max(acc[1][p][v], acc[1][p + 1][v]));
            if (relu) m = V::max(m, V::zero());
            V::store(out + (p / 2) * s->oc + v * V::W, m);
        }
}

// One pooled output vector from its window's four convolution values (row-major): their maximum (then a ReLU if
// relu) to y, and to argmax (may be null) the first position that holds it, or -1 where the ReLU zeroed it.
template <class V>
inline void store_pool_window(typename V::T c0, typename V::T c1, typename V::T c2, typename V::T c3, int relu, float* y,
                              float* argmax) {
    typename V::T m = c0, which = V::zero();
    const auto window = [&](typename V::T c, float d) {  // strictly greater: the first maximum wins
        const typename V::M more = V::gt(c, m);
        m = V::select(more, c, m);
        which = V::select(more, V::set1(d), which);
    };
    window(c1, 1.0f);
    window(c2, 2.0f);
    window(c3, 3.0f);
    V::store(y, relu ? V::max(m, V::zero()) : m);
    if (argmax) V::store(argmax, relu ? V::select(V::gt(m, V::zero()), which, V::set1(-1.0f)) : which);
}

// 16 lanes (batches, training): OCB channels x one pooling window (2 rows x 2 pixels) x LV vectors; the epilogue
// also records which of the window's positions won (argmax; -1 where the ReLU zeroed the output), for the backward
// pass.
template <class V> constexpr int pool16_ocb() {
    constexpr int n = V::acc_budget / (4 * (kDirectLanes / V::W));
    return n > 8 ? 8 : (n < 1 ? 1 : n);
}

template <class V, int OCB, int K = 0>
LENET_TILE_FUNCTION
void conv_pool16_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y,
                      float* argmax, int o0, int py, int px, int relu) {
    constexpr int LV = kDirectLanes / V::W, L = kDirectLanes;
    const int kh = K ? K : s->kh, kw = K ? K : s->kw;
    const ptrdiff_t pw = s->ow + kw - 1, ph = s->oh + kh - 1, wstride = ptrdiff_t(s->ic) * kh * kw;
    const int oy = 2 * py, ox = 2 * px;
    typename V::T acc[OCB][4][LV];  // window position d = 2 * row + column
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int d = 0; d < 4; ++d)
            LENET_TILE_LOOP for (int v = 0; v < LV; ++v) acc[o][d][v] = b;
    }
    const KernelRows r0 = image_rows(s, oy), r1 = image_rows(s, oy + 1), cols = image_columns(s, ox, 2);
    // (K > 0: constant bounds, which gcc unrolls as far as registers allow; the unroll pragma spilled)
    const int ky0 = K ? 0 : (r1.lo < r0.lo ? r1.lo : r0.lo), ky1 = K ? K : (r0.hi > r1.hi ? r0.hi : r1.hi);
    const int kx0 = K ? 0 : cols.lo, kx1 = K ? K : cols.hi;
    for (int c = 0; c < s->ic; ++c)
        for (int ky = ky0; ky < ky1; ++ky) {
            const float* row = xpad + ((c * ph + oy + ky) * pw + ox) * L;
            const float* wrow = w + o0 * wstride + (c * kh + ky) * kw;
            for (int kx = kx0; kx < kx1; ++kx) {
                typename V::T wv[OCB];
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) wv[o] = V::set1(wrow[o * wstride + kx]);
                LENET_TILE_LOOP for (int d = 0; d < 4; ++d)
                    LENET_TILE_LOOP for (int v = 0; v < LV; ++v) {
                        const typename V::T xv = V::load(row + ((d / 2) * pw + d % 2 + kx) * L + v * V::W);
                        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) acc[o][d][v] = V::fmadd(wv[o], xv, acc[o][d][v]);
                    }
            }
        }
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
        const ptrdiff_t at = ((ptrdiff_t(o0 + o) * out_h + py) * out_w + px) * L;
        LENET_TILE_LOOP for (int v = 0; v < LV; ++v) {
            store_pool_window<V>(acc[o][0][v], acc[o][1][v], acc[o][2][v], acc[o][3][v], relu, y + at + v * V::W,
                                 argmax ? argmax + at + v * V::W : nullptr);
        }
    }
}

// One input channel and a 3x3 kernel at 16 lanes (the MNIST-CoreML-Training graph's first layer), AVX-512: OCB
// channels x one pooled row, their 9 x OCB weights held in registers across the row (with one input channel, the
// tile above reloads every weight for every 36 multiply-adds of a window). Each conv sum is accumulated in the same
// order as conv_pool16_tile's. Unpadded inputs only: the tile does not skip a zero border. (That layer, one block on
// one thread: 48 -> 38 us with 2 channels; 1 channel was no faster than the tile above, and LeNet-5's 5x5 first layer,
// padded, ran 1.1x slower this way.)
template <class V> constexpr bool has_pool16_row_tile() { return V::W == 16 && V::acc_budget >= 24; }
constexpr int kPoolRowChannels = 2;  // 18 weight and 8 accumulator registers

template <class V, int OCB>
LENET_TILE_FUNCTION
void conv_pool16_row_tile(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y,
                          float* argmax, int o0, int py, int relu) {
    constexpr int K = 3, L = kDirectLanes;
    const ptrdiff_t pw = s->ow + K - 1;
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    typename V::T wr[OCB][K * K];
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int t = 0; t < K * K; ++t) wr[o][t] = V::set1(w[(o0 + o) * K * K + t]);
    const float* window = xpad + ptrdiff_t(2 * py) * pw * L;  // the pooling window's 4x4 input pixels, from its top left
    for (int px = 0; px < out_w; ++px, window += 2 * L) {
        typename V::T acc[OCB][4];  // window position d = 2 * row + column
        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
            const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
            LENET_TILE_LOOP for (int d = 0; d < 4; ++d) acc[o][d] = b;
        }
        // input pixel (r, q) feeds position d at kernel tap (r - d / 2, q - d % 2): in kernel-row order per position,
        // the order of conv_pool16_tile's sums
        LENET_TILE_LOOP for (int r = 0; r < K + 1; ++r)
            LENET_TILE_LOOP for (int q = 0; q < K + 1; ++q) {
                const typename V::T x = V::load(window + (r * pw + q) * L);
                LENET_TILE_LOOP for (int d = 0; d < 4; ++d) {
                    const int ky = r - d / 2, kx = q - d % 2;
                    if (ky < 0 || ky >= K || kx < 0 || kx >= K) continue;
                    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
                        acc[o][d] = V::fmadd(wr[o][ky * K + kx], x, acc[o][d]);
                }
            }
        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o) {
            const ptrdiff_t at = ((ptrdiff_t(o0 + o) * out_h + py) * out_w + px) * L;
            store_pool_window<V>(acc[o][0], acc[o][1], acc[o][2], acc[o][3], relu, y + at,
                                 argmax ? argmax + at : nullptr);
        }
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw] -> y [oc][oh/2][ow/2][L] = relu?(maxpool 2x2 stride 2 of the
// conv), L = 1 or 16 (then also argmax). At 16 lanes the channel tiles of one pooled pixel run back to back, so its
// input window stays in L1 (channel tiles outermost re-read the whole input from L2 per tile: the
// MNIST-CoreML-Training graph's 2x2 32 -> 32 layer, 4 blocks on one thread, measured 1.2x slower on AVX2 and about
// 1.05x on AVX-512; its training step on 2 threads 1.5% slower).
template <class V>
void conv_pool_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                   float* y, float* argmax, int relu) {
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    if (s->lanes != 1) {
        if constexpr (has_pool16_row_tile<V>()) {
            if (s->ic == 1 && s->kh == 3 && s->kw == 3 && s->ph == 0 && s->pw == 0) {
                for (int o0 = 0; o0 < s->oc; o0 += kPoolRowChannels)
                    with_size<kPoolRowChannels>(s->oc - o0 < kPoolRowChannels ? s->oc - o0 : kPoolRowChannels,
                                                [&](auto o) {
                                                    for (int py = 0; py < out_h; ++py)
                                                        conv_pool16_row_tile<V, decltype(o)::value>(
                                                            s, xpad, w, bias, y, argmax, o0, py, relu);
                                                });
                return;
            }
        }
        constexpr int OCB = pool16_ocb<V>();
        for (int py = 0; py < out_h; ++py)
            for (int px = 0; px < out_w; ++px)
                for (int o0 = 0; o0 < s->oc; o0 += OCB)
                    with_size<OCB>(s->oc - o0 < OCB ? s->oc - o0 : OCB, [&](auto o) {
                        constexpr int O = decltype(o)::value;
                        if constexpr (O == OCB)  // whole channel tiles inside the image: unrolled
                            if (window_inside(s, 2 * py, 2, 2 * px, 2) && with_unrolled_kernel<V>(s, [&](auto k) {
                                    conv_pool16_tile<V, O, decltype(k)::value>(s, xpad, w, bias, y, argmax, o0, py,
                                                                               px, relu);
                                }))
                                return;
                        conv_pool16_tile<V, O>(s, xpad, w, bias, y, argmax, o0, py, px, relu);
                    });
        return;
    }
    if (conv_channels_fit<V>(s)) {
        float regrouped[kChannelMaxWeights];
        if (!w_cl) conv_weights_channels_last(s, w, regrouped);
        const float* wt = w_cl ? w_cl : regrouped;
        float out[kChannelMaxVectors * V::W * V::W / 2];  // one pooled row [out_w][oc] (ow < W), then transposed into y
        with_size<kChannelMaxVectors>(s->oc / V::W, [&](auto ov) {
            constexpr int OV = decltype(ov)::value, PXB = channel_pool_pxb<V, OV>();
            for (int py = 0; py < out_h; ++py) {
                for (int ox0 = 0; ox0 + 1 < s->ow; ox0 += PXB) {
                    const int left = (s->ow - ox0) / 2 * 2;  // whole pooling pairs
                    with_size<PXB / 2>((left < PXB ? left : PXB) / 2, [&](auto pairs) {
                        conv_channel_pool_tile<V, OV, 2 * decltype(pairs)::value>(s, xpad, wt, bias,
                                                                                   out + ptrdiff_t(ox0 / 2) * s->oc,
                                                                                   py, ox0, relu);
                    });
                }
                store_channels_last_row(out, s->oc, out_h, out_w, py, y);
            }
        });
        return;
    }
    constexpr int chunk = kPoolRowMaxVectors * V::W;
    for (int ox0 = 0; ox0 + 1 < s->ow; ox0 += chunk) {
        const int n = s->ow - ox0 < chunk ? s->ow - ox0 : chunk;
        with_size<kPoolRowMaxVectors>((n + V::W - 1) / V::W, [&](auto nv) {
            constexpr int NV = decltype(nv)::value, OCB = pool_row_ocb<V, NV>();
            for (int o0 = 0; o0 < s->oc; o0 += OCB)
                for (int py = 0; py < out_h; ++py)
                    with_size<OCB>(s->oc - o0 < OCB ? s->oc - o0 : OCB, [&](auto o) {
                        constexpr int O = decltype(o)::value;
                        if (n == NV * V::W)
                            conv_row_pool_tile<V, O, NV, true>(s, xpad, w, bias, y, o0, py, ox0, n, relu);
                        else
                            conv_row_pool_tile<V, O, NV, false>(s, xpad, w, bias, y, o0, py, ox0, n, relu);
                    });
        });
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][L], w [oc][ic][kh][kw] -> y [oc][oh][ow][L], L = 16 (or 1: conv_row_fwd).
// Every tile of OCB channels x PXB pixels.
// The channel tiles of one pixel tile run back to back, so its input window (ic x kh rows x PXB + kw - 1 pixels)
// is read from L1 after the first. (Channel tiles outermost re-read the whole input from L2 per channel tile: the
// MNIST-CoreML-Training graph's unfused 2x2 32 -> 32 layer, one block on AVX2, measured 1.1x slower; AVX-512 and
// LeNet-5's layers the same within noise.)
template <class V, int OCB, int PXB>
void conv_direct_tiles(const ConvShape* s, const float* xpad, const float* w, const float* bias, float* y) {
    for (int oy = 0; oy < s->oh; ++oy)
        for (int ox0 = 0; ox0 < s->ow; ox0 += PXB)
            for (int o0 = 0; o0 < s->oc; o0 += OCB) {
                with_size<OCB>(s->oc - o0 < OCB ? s->oc - o0 : OCB, [&](auto o) {
                    constexpr int O = decltype(o)::value;
                    with_size<PXB>(s->ow - ox0 < PXB ? s->ow - ox0 : PXB, [&](auto p) {
                        constexpr int P = decltype(p)::value;
                        if constexpr (O == OCB && P == PXB)  // whole tiles inside the image: unrolled
                            if (window_inside(s, oy, 1, ox0, PXB) && with_unrolled_kernel<V>(s, [&](auto k) {
                                    conv_direct_tile<V, O, P, decltype(k)::value>(s, xpad, w, bias, y, o0, oy, ox0);
                                }))
                                return;
                        conv_direct_tile<V, O, P>(s, xpad, w, bias, y, o0, oy, ox0);
                    });
                });
    }
}

template <class V>
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                     float* y) {
    if (s->lanes == 1) return conv_row_fwd<V>(s, xpad, w, w_cl, bias, y);
    conv_direct_tiles<V, direct_fwd_ocb<V>(), direct_fwd_pxb<V>()>(s, xpad, w, bias, y);
}

// ---- weight gradient: dw[o][c][ky][kx] = sum_{y,x,lanes} g[o][y][x] * xpad[c][y+ky][x+kx] -------------------------
// g, the convolution's output gradient, comes from a source G: StoredGrad, a gradient in memory (conv_direct_dw), or
// RoutedGrad, the gradient of the 2x2 max pooling fused after the convolution, routed on the fly (conv_pool_dw).

// Each source gives, for output row oy of channels from o0 on, a Row whose at<ox & 1>(o, gx, v) is vector v of
// g[o0 + o][oy][ox], where gx is ox in the source's own columns: ox itself, or for the routed gradient the pooled
// column ox / 2 (so that the tile's loop over column pairs computes no index per pixel).

// dy [oc][oh][ow][16] inside a border of bh rows and bw columns: [oc][oh+2bh][ow+2bw][16].
template <class V>
struct StoredGrad {
    static constexpr bool kRouted = false;
    const float* dy;       // at row 0, column 0 inside the border
    ptrdiff_t plane, row;  // floats per channel and per row of dy, border included
    int rows, cols;        // the positions that have a gradient: all of them
    StoredGrad(const ConvShape* s, const float* dy_, int bh, int bw)
        : plane(ptrdiff_t(s->oh + 2 * bh) * (s->ow + 2 * bw) * kDirectLanes),
          row(ptrdiff_t(s->ow + 2 * bw) * kDirectLanes), rows(s->oh), cols(s->ow) {
        dy = dy_ + bh * row + bw * kDirectLanes;
    }
    struct Row {
        const float* dy;
        ptrdiff_t plane;
        template <int PARITY>
        typename V::T at(int o, int ox, int v) const { return V::load(dy + o * plane + ox * kDirectLanes + v * V::W); }
    };
    Row at_row(int o0, int oy) const { return {dy + o0 * plane + oy * row, plane}; }
};

// The pooled output's gradient dy [oc][oh/2][ow/2][16] reaches the convolution only at the position of its window
// that argmax names (0-3, row-major; -1, where the ReLU zeroed the output, names none): computed where the tile
// needs it, so the convolution's full-size gradient (3/4 zeros) is never stored. An odd last row or column, which
// the pooling drops, gets none. (The forward pass folds the ReLU into argmax: routing on argmax and y > 0 cost
// 3 loads and 4 operations per g, and read y back; on argmax alone, 2 and 2. The MNIST-CoreML-Training graph's
// first layer on AVX-512, one block: weight gradient 1.07x faster, forward 5% slower; its training step, where the
// 346 KB per block of y no longer comes back from L3, 2.7% faster on 1 and 2 threads.)
template <class V>
struct RoutedGrad {
    static constexpr bool kRouted = true;  // each g costs 2 loads and 2 operations: tiles should not repeat it
    const float *dy, *argmax;
    ptrdiff_t plane, row;  // floats per channel and per row of the pooled tensors
    int rows, cols;
    RoutedGrad(const ConvShape* s, const float* argmax_, const float* dy_)
        : dy(dy_), argmax(argmax_), plane(ptrdiff_t(s->oh / 2) * (s->ow / 2) * kDirectLanes),
          row(ptrdiff_t(s->ow / 2) * kDirectLanes), rows(s->oh / 2 * 2), cols(s->ow / 2 * 2) {}
    struct Row {
        const float *dy, *argmax;
        ptrdiff_t plane;
        typename V::T position[2];  // the window positions of this row's even and odd columns: 0 and 1, or 2 and 3
        template <int PARITY>       // column ox = 2 * px + PARITY
        typename V::T at(int o, int px, int v) const {
            const ptrdiff_t i = o * plane + px * kDirectLanes + v * V::W;
            return V::select(V::eq(V::load(argmax + i), position[PARITY]), V::load(dy + i), V::zero());
        }
    };
    Row at_row(int o0, int oy) const {
        const ptrdiff_t i = o0 * plane + (oy >> 1) * row;
        const float first = float((oy & 1) * 2);
        return {dy + i, argmax + i, plane, {V::set1(first), V::set1(first + 1.0f)}};
    }
};

// Register tile: OCB output channels x KYB kernel rows x KXB kernel columns x LV vectors, one input channel c at a
// time; the accumulators are vectors of per-lane partial sums, reduced by one horizontal sum per weight at the end.
// Kernels of 4 or 5 columns take one row at a time; narrow ones (1 or 2 columns, as in the MNIST-CoreML-Training
// graph's 2x2 convolution) two rows and more channels, so that each dy vector feeds enough FMAs; a 3x3 kernel (that
// graph's first layer), where registers allow, all of it: 2 channels x 9 weights, each dy vector read once.
template <class V> constexpr int direct_dw_kxb() {
    return V::acc_budget / (direct_ocb<V>() * (kDirectLanes / V::W)) - (V::W >= 16 ? 1 : 0);  // 5 / 3
}
// The two-row tile holds at most 16 accumulators: on AVX-512, 4 channels x 2 x 2 measured 1.12x faster than 6
// channels (24) on the MNIST-CoreML-Training graph's 2x2 layer, with 24, 32 or 48 output channels alike.
template <class V, int KYB, int KXB> constexpr int direct_dw_ocb() {
    if (KYB == 1) return direct_ocb<V>();  // the one-row tile: as many channels as the forward tile
    constexpr int budget = KYB == 2 && V::acc_budget > 16 ? 16 : V::acc_budget;
    constexpr int n = budget / (KYB * KXB * (kDirectLanes / V::W));
    return n > 8 ? 8 : (n < 1 ? 1 : n);
}

// LVT: the vectors of the 16 lanes this tile covers, from vector v0: all of them (LV), or one (split lanes: each
// pass reads dy and x once per vector instead of once per pixel, and the passes add up their sums).
template <class V, int OCB, int KYB, int KXB, int LVT, class G>
LENET_TILE_FUNCTION
void conv_direct_dw_tile(const ConvShape* s, const float* xpad, const G& g_src, float* dw, int o0, int c, int ky0,
                         int kx0, int v0) {
    constexpr int L = kDirectLanes;
    const ptrdiff_t pw = s->ow + s->kw - 1, ph = s->oh + s->kh - 1;
    typename V::T acc[OCB][KYB][KXB][LVT];
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int r = 0; r < KYB; ++r)
            LENET_TILE_LOOP for (int k = 0; k < KXB; ++k)
                LENET_TILE_LOOP for (int v = 0; v < LVT; ++v) acc[o][r][k][v] = V::zero();
    for (int oy = 0; oy < g_src.rows; ++oy) {
        // kernel row ky0 + r: xrow + r * pw * L
        const float* xrow = xpad + ((c * ph + oy + ky0) * pw + kx0) * L + v0 * V::W;
        const auto grow = g_src.at_row(o0, oy);
        auto pixel = [&](int ox, int gx, auto parity) {  // gx: ox in the source's columns (routed: pooled)
            LENET_TILE_LOOP for (int v = 0; v < LVT; ++v) {
                typename V::T g[OCB];
                LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
                    g[o] = grow.template at<decltype(parity)::value>(o, gx, v0 + v);
                LENET_TILE_LOOP for (int r = 0; r < KYB; ++r)
                    LENET_TILE_LOOP for (int k = 0; k < KXB; ++k) {
                        const typename V::T xv = V::load(xrow + (r * pw + ox + k) * L + v * V::W);
                        LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
                            acc[o][r][k][v] = V::fmadd(g[o], xv, acc[o][r][k][v]);
                    }
            }
        };
        // Routed: cols is even, and each pair of columns takes its two window positions as vectors set once per row
        // (computing one per column from ox & 1 cost an int-to-float conversion and a broadcast per pixel: the
        // MNIST-CoreML-Training graph's first layer, 4 blocks on one thread, measured 1.18x slower on AVX2 and
        // about 1.03x on AVX-512).
        if constexpr (G::kRouted) {
            for (int px = 0; px < g_src.cols / 2; ++px) {
                pixel(2 * px, px, Size<0>{});
                pixel(2 * px + 1, px, Size<1>{});
            }
        } else {
            for (int ox = 0; ox < g_src.cols; ++ox) pixel(ox, ox, Size<0>{});
        }
    }
    LENET_TILE_LOOP for (int o = 0; o < OCB; ++o)
        LENET_TILE_LOOP for (int r = 0; r < KYB; ++r)
            LENET_TILE_LOOP for (int k = 0; k < KXB; ++k) {
                typename V::T sum = acc[o][r][k][0];
                LENET_TILE_LOOP for (int v = 1; v < LVT; ++v) sum = V::add(sum, acc[o][r][k][v]);
                float& out = dw[(((o0 + o) * s->ic + c) * s->kh + ky0 + r) * s->kw + kx0 + k];
                out = v0 == 0 ? V::hsum(sum) : out + V::hsum(sum);
            }
}

// Every tile of KYB kernel rows (the last may have fewer) and KXB columns (likewise), OCB channels at a time, LVT
// vectors of lanes at a time. WHOLE: the kernel is exactly KYB x KXB, so no smaller tile is instantiated for it.
template <class V, int KYB, int KXB, int LVT, bool WHOLE = false, class G>
void conv_direct_dw_tiles(const ConvShape* s, const float* xpad, const G& g_src, float* dw) {
    constexpr int OCB = direct_dw_ocb<V, KYB, KXB>(), LV = kDirectLanes / V::W;
    auto kernel_size = [](auto max, int n, auto&& f) {  // f(Size<n>), from the sizes up to max (only max if WHOLE)
        if constexpr (WHOLE) f(max);
        else with_size<decltype(max)::value>(n, f);
    };
    for (int o0 = 0; o0 < s->oc; o0 += OCB)
        with_size<OCB>(s->oc - o0 < OCB ? s->oc - o0 : OCB, [&](auto o) {
            for (int c = 0; c < s->ic; ++c)
                for (int ky0 = 0; ky0 < s->kh; ky0 += KYB)
                    kernel_size(Size<KYB>{}, s->kh - ky0 < KYB ? s->kh - ky0 : KYB, [&](auto r) {
                        for (int kx0 = 0; kx0 < s->kw; kx0 += KXB)
                            kernel_size(Size<KXB>{}, s->kw - kx0 < KXB ? s->kw - kx0 : KXB, [&](auto k) {
                                for (int v0 = 0; v0 < LV; v0 += LVT)
                                    conv_direct_dw_tile<V, decltype(o)::value, decltype(r)::value, decltype(k)::value,
                                                        LVT>(s, xpad, g_src, dw, o0, c, ky0, kx0, v0);
                            });
                    });
        });
}

// dw [oc][ic][kh][kw] (overwritten) from xpad [ic][oh+kh-1][ow+kw-1][16] and the gradient source, with the tile
// that suits the kernel's size. (Only the tiles a source can take are instantiated: each size of a tile is a
// function of its own, and the library's size is a goal.)
template <class V, class G>
void conv_dw(const ConvShape* s, const float* xpad, const G& g_src, float* dw) {
    constexpr int KXB = direct_dw_kxb<V>(), LV = kDirectLanes / V::W;
    if constexpr (G::kRouted) {
        // A fused first layer: tiles of up to 3x3 kernel positions, so that each g, which costs 2 loads and 2
        // operations, feeds up to 9 FMAs per channel; 2 channels and all 16 lanes on AVX-512, one channel and one
        // vector of lanes on AVX2 and NEON, whose registers hold no more. Measured on the first layers, one block,
        // when each g cost 3 loads and 4 operations: the MNIST-CoreML-Training graph's 3x3 2.1x faster than the
        // one-row tile on AVX-512 and 1.47x on AVX2 (which compute each g once per kernel row); LeNet-5's 5x5 on
        // AVX-512 4% faster.
        conv_direct_dw_tiles<V, 3, 3, (LV > 1 ? 1 : LV)>(s, xpad, g_src, dw);
    } else {
        if constexpr (KXB >= 4) {
            if (s->kw <= KXB / 2 && s->kh >= 2) return conv_direct_dw_tiles<V, 2, KXB / 2, LV>(s, xpad, g_src, dw);
            // 3x3 on AVX-512 (18 accumulators): 2.1x the one-row tile (3 rows of 4 channels x 3 columns, each dy
            // vector read three times), measured on the MNIST-CoreML-Training graph's first layer (1 -> 32 channels).
            if (s->kw == 3 && s->kh == 3) return conv_direct_dw_tiles<V, 3, 3, LV, true>(s, xpad, g_src, dw);
        }
        // AVX2 (two vectors of lanes): one vector at a time fits a whole row of up to 6 kernel columns (LeNet-5's 5)
        // in one tile, where both vectors at once took tiles of 3 and 2 columns.
        if constexpr (LV == 2) {
            constexpr int kSplitKXB = V::acc_budget / direct_ocb<V>();
            if (s->kw > KXB && s->kw <= kSplitKXB)
                return conv_direct_dw_tiles<V, 1, kSplitKXB, 1>(s, xpad, g_src, dw);
        }
        conv_direct_dw_tiles<V, 1, KXB, LV>(s, xpad, g_src, dw);
    }
}

// xpad [ic][oh+kh-1][ow+kw-1][16], dy [oc][oh][ow][16] inside a border (bh, bw) -> dw [oc][ic][kh][kw] (overwritten).
template <class V>
void conv_direct_dw(const ConvShape* s, const float* xpad, const float* dy, int bh, int bw, float* dw) {
    conv_dw<V>(s, xpad, StoredGrad<V>(s, dy, bh, bw), dw);
}

// The fused convolution + max pooling's weight and bias gradients (kernels.h: conv_pool_dw); db is the sum of the
// pooled gradient where it reaches the convolution, which is wherever argmax names a position, since every window
// routes it to at most one.
template <class V>
void conv_pool_dw(const ConvShape* s, const float* xpad, const float* argmax, const float* dy, float* dw,
                  float* db) {
    if (s->lanes != kDirectLanes) return ref::conv_pool_dw(s, xpad, argmax, dy, dw, db);
    const RoutedGrad<V> g_src(s, argmax, dy);
    if (dw) conv_dw<V>(s, xpad, g_src, dw);
    if (!db) return;
    for (int o = 0; o < s->oc; ++o) {
        typename V::T acc = V::zero();
        for (ptrdiff_t i = o * g_src.plane; i < (o + 1) * g_src.plane; i += V::W)
            acc = V::add(acc, V::select(V::gt(V::load(argmax + i), V::set1(-1.0f)), V::load(dy + i), V::zero()));
        db[o] = V::hsum(acc);
    }
}

// The fused convolution + max pooling's full-size gradient (kernels.h: conv_pool_route): each pooled vector of dy
// goes to the window position argmax names, zeros to the other three.
template <class V>
void conv_pool_route(const ConvShape* s, const float* argmax, const float* dy, float* g, int bh, int bw) {
    if (s->lanes != kDirectLanes) return ref::conv_pool_route(s, argmax, dy, g, bh, bw);
    constexpr int L = kDirectLanes;
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    const ptrdiff_t row = ptrdiff_t(s->ow) * L, g_row = ptrdiff_t(s->ow + 2 * bw) * L;  // g_row: border included
    for (int o = 0; o < s->oc; ++o)
        for (int oy = 0; oy < s->oh; ++oy) {
            float* out = g + ((ptrdiff_t(o) * (s->oh + 2 * bh) + oy + bh) * g_row) + ptrdiff_t(bw) * L;
            const int py = oy / 2;
            int ox = 0;
            if (py < out_h)
                for (; ox < 2 * out_w; ox += 2) {
                    const ptrdiff_t i = ((ptrdiff_t(o) * out_h + py) * out_w + ox / 2) * L;
                    const float first = float((oy % 2) * 2);  // the window position of this row's even column
                    for (int v = 0; v < L; v += V::W) {
                        const typename V::T a = V::load(argmax + i + v), d = V::load(dy + i + v);
                        V::store(out + ox * L + v, V::select(V::eq(a, V::set1(first)), d, V::zero()));
                        V::store(out + (ox + 1) * L + v, V::select(V::eq(a, V::set1(first + 1.0f)), d, V::zero()));
                    }
                }
            for (ptrdiff_t i = ptrdiff_t(ox) * L; i < row; ++i) out[i] = 0.0f;  // what the pooling dropped
        }
}

}  // namespace
}  // namespace lenet::simd
