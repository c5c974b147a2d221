// The backward of a convolution fused with a 2x2 max pooling, input gradient included, through the pooling's
// sparsity (kernels.h: conv_pool_bwd_sparse). Only the window position that won the pooling gets a gradient, so
// of the convolution's outputs a quarter take part in dW and dX, and none where the ReLU zeroed the pooled output.
// With the samples in the lanes every position would have to be computed (each lane's winner differs); here each
// sample is taken alone, with the input channels in the vector: x and dx transposed to channels-last; each output
// channel's nonzero gradients compressed with their winning positions; then per gradient one broadcast times the
// input at that position into dW's registers, and times the weights into dX there. The MNIST-CoreML-Training graph's
// 32 -> 32 2x2 layer, one block on one thread of the Intel VM: 170 us (before the compression, on random data with
// few zeros) against 280 us for routing the gradient, the direct dW and the Winograd dX (bench/experiments.md).
// AVX-512 only (16 input channels per vector, and its 16x16 transposes).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <cstring>

#include "../kernels.h"
#include "tile.h"

namespace lenet::simd {
namespace {

template <class V> constexpr bool has_sparse_pool_backward() { return V::W == 16; }

// The block's pooled gradients per (output channel, window) entry, entries = oc * windows rounded up to 16 (the rest
// zero), and lane: at, the offset of the window's winning position in a sample's channels-last input, whose rows are
// `width` pixels of `channels` floats; gw, the gradient there (0 where the ReLU zeroed the output); [entries][L].
// Then the same per sample, at_l and gw_l [L][entries]. One function for both kernels below (each of its copies
// took 1-2 KB of library).
template <class V>
__attribute__((noinline)) void pooled_entries(const ConvShape* s, const float* argmax, const float* dy, int width,
                                              int channels, ptrdiff_t entries, float* at, float* gw, float* at_l,
                                              float* gw_l) {
    using T = typename V::T;
    constexpr int L = 16;
    const int out_w = s->ow / 2;
    const ptrdiff_t nwin = ptrdiff_t(s->oh / 2) * out_w;
    for (ptrdiff_t e = 0; e < entries; ++e) {  // window position d wins: row 2 py + d / 2, column 2 px + d % 2
        if (e >= s->oc * nwin) {               // padding up to whole 16x16 transposes
            V::store(at + e * L, V::zero());
            V::store(gw + e * L, V::zero());
            continue;
        }
        const int w0 = int(e % nwin);
        const T a = V::load(argmax + e * L), d = V::max(a, V::zero());
        const T down = V::select(V::gt(d, V::set1(1.5f)), V::set1(1.0f), V::zero());
        const float base = float((2 * (w0 / out_w) * width + 2 * (w0 % out_w)) * channels);
        V::store(at + e * L, V::add(V::set1(base), V::mul(V::add(V::mul(down, V::set1(float(width - 2))), d),
                                                          V::set1(float(channels)))));
        V::store(gw + e * L, V::select(V::eq(a, V::set1(-1.0f)), V::zero(), V::load(dy + e * L)));
    }
    for (ptrdiff_t e = 0; e < entries; e += 16) {
        V::transpose16(at + e * L, L, at_l + e, entries);
        V::transpose16(gw + e * L, L, gw_l + e, entries);
    }
}

// One sample's nonzero gradients of one output channel, in window order (the ReLU zeroes many: none reaches dW or
// dX): from its rows of at_l and gw_l, their offsets into at_nz and values into gw_nz (nwin + 16 floats each).
// Returns how many.
template <class V>
inline int nonzero_gradients(const float* aa, const float* ga, int nwin, float* at_nz, float* gw_nz) {
    int n = 0;
    for (int i = 0; i < nwin; i += 16) {
        const int k = nwin - i < 16 ? nwin - i : 16;
        const typename V::T g = V::load_n(ga + i, k);
        const typename V::M nz = V::mandnot(V::eq(g, V::zero()), V::first(k));
        V::compress(at_nz + n, V::load_n(aa + i, k), nz);
        n += V::compress(gw_nz + n, g, nz);
    }
    return n;
}

// db [oc] = the sum of gw (pooled_entries') over the windows and lanes of each output channel.
template <class V>
void pooled_bias_grad(int oc, int nwin, const float* gw, float* db) {
    for (int o = 0; db && o < oc; ++o) {
        typename V::T sum = V::zero();
        for (int i = 0; i < nwin; ++i) sum = V::add(sum, V::load(gw + (ptrdiff_t(o) * nwin + i) * 16));
        db[o] = V::hsum(sum);
    }
}

// NV vectors of 16 input channels; 2x2 kernels (TAPS = 4).
template <class V, int NV>
LENET_TILE_FUNCTION
void conv_pool_bwd_sparse_nv(const ConvShape* s, const float* x, const float* w, const float* argmax, const float* dy,
                             float* dw, float* db, float* dx, float* work) {
    using T = typename V::T;
    constexpr int L = 16, IC = 16 * NV, TAPS = 4;
    const ConvPoolSparseWork lay = conv_pool_sparse_work(s);  // the scratch's arrays (kernels.h)
    const int oc = s->oc, iw = s->iw, nwin = int(lay.windows);
    const ptrdiff_t plane = ptrdiff_t(s->ih) * iw, sample = plane * IC, entries = lay.entries;
    float *xcl = work + lay.xcl, *dxcl = work + lay.dxcl, *at = work + lay.at, *gw = work + lay.gw;
    float *at_l = work + lay.at_l, *gw_l = work + lay.gw_l, *at_nz = work + lay.at_nz, *gw_nz = work + lay.gw_nz;
    float *wcl = work + lay.wcl, *dwcl = work + lay.dwcl;

    for (int v = 0; v < NV; ++v)
        for (ptrdiff_t p = 0; p < plane; ++p)
            V::transpose16(x + (v * 16 * plane + p) * L, plane * L, xcl + p * IC + v * 16, sample);
    pooled_entries<V>(s, argmax, dy, iw, IC, entries, at, gw, at_l, gw_l);
    for (int o = 0; o < oc; ++o)
        for (int c = 0; c < IC; ++c)
            for (int t = 0; t < TAPS; ++t) wcl[(o * TAPS + t) * IC + c] = w[(o * IC + c) * TAPS + t];
    std::memset(dxcl, 0, size_t(L * sample) * sizeof(float));
    std::memset(dwcl, 0, size_t(oc) * TAPS * IC * sizeof(float));

    const ptrdiff_t tap[TAPS] = {0, IC, ptrdiff_t(iw) * IC, ptrdiff_t(iw + 1) * IC};
    for (int l = 0; l < L; ++l) {
        const float* xl = xcl + l * sample;
        float* dxl = dxcl + l * sample;
        for (int o = 0; o < oc; ++o) {
            const ptrdiff_t row = l * entries + ptrdiff_t(o) * nwin;
            const int n = nonzero_gradients<V>(at_l + row, gw_l + row, nwin, at_nz, gw_nz);
            if (n == 0) continue;
            T wv[TAPS][NV], acc[TAPS][NV];
            LENET_TILE_LOOP for (int t = 0; t < TAPS; ++t)
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v) {
                    wv[t][v] = V::load(wcl + (o * TAPS + t) * IC + v * 16);
                    acc[t][v] = V::load(dwcl + (o * TAPS + t) * IC + v * 16);
                }
            for (int i = 0; i < n; ++i) {
                const ptrdiff_t q = ptrdiff_t(at_nz[i]);
                const float* xp = xl + q;
                float* dp = dxl + q;
                const T g = V::set1(gw_nz[i]);
                LENET_TILE_LOOP for (int t = 0; t < TAPS; ++t)
                    LENET_TILE_LOOP for (int v = 0; v < NV; ++v) {
                        acc[t][v] = V::fmadd(g, V::load(xp + tap[t] + v * 16), acc[t][v]);
                        V::store(dp + tap[t] + v * 16, V::fmadd(g, wv[t][v], V::load(dp + tap[t] + v * 16)));
                    }
            }
            LENET_TILE_LOOP for (int t = 0; t < TAPS; ++t)
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v) V::store(dwcl + (o * TAPS + t) * IC + v * 16, acc[t][v]);
        }
    }

    for (int v = 0; v < NV; ++v)
        for (ptrdiff_t p = 0; p < plane; ++p)
            V::transpose16(dxcl + p * IC + v * 16, sample, dx + (v * 16 * plane + p) * L, plane * L);
    for (int o = 0; dw && o < oc; ++o)
        for (int c = 0; c < IC; ++c)
            for (int t = 0; t < TAPS; ++t) dw[(o * IC + c) * TAPS + t] = dwcl[(o * TAPS + t) * IC + c];
    pooled_bias_grad<V>(oc, nwin, gw, db);
}

template <class V>
void conv_pool_bwd_sparse(const ConvShape* s, const float* x, const float* w, const float* argmax, const float* dy,
                          float* dw, float* db, float* dx, float* work) {
    if (s->ic == 32) conv_pool_bwd_sparse_nv<V, 2>(s, x, w, argmax, dy, dw, db, dx, work);
    else conv_pool_bwd_sparse_nv<V, 1>(s, x, w, argmax, dy, dw, db, dx, work);
}

// The weight and bias gradients alone through the same sparsity (kernels.h: conv_pool_dw_sparse), for layers with
// few input channels: a kernel row of all of them, kw * ic floats contiguous in the channels-last input, fills two
// vectors (LeNet-5's second layer: 5 columns x 6 channels). Per nonzero gradient, KH x 2 multiply-adds of a broadcast
// times the rows of its input patch into dW's registers, where the direct kernel multiplies every convolution output
// of every window, ReLU-zeroed ones too. The rows of dW per output channel, [oc][KH][32] (kx * ic + c), in dwcl.
template <class V, int KH>
LENET_TILE_FUNCTION
void sparse_dw_rows(const ConvShape* s, const ConvPoolDwSparseWork& lay, float* work) {
    using T = typename V::T;
    constexpr int L = 16, NV = 2, RW = 32;
    const int nwin = int(lay.windows);
    const ptrdiff_t row = ptrdiff_t(s->ow + s->kw - 1) * s->ic;  // an input row, channels-last
    float *at_nz = work + lay.at_nz, *gw_nz = work + lay.gw_nz;
    for (int l = 0; l < L; ++l) {
        const float* xl = work + lay.xcl + l * lay.sample;
        for (int o = 0; o < s->oc; ++o) {
            const ptrdiff_t entry = l * lay.entries + ptrdiff_t(o) * nwin;
            const int n = nonzero_gradients<V>(work + lay.at_l + entry, work + lay.gw_l + entry, nwin, at_nz, gw_nz);
            if (n == 0) continue;
            float* dwo = work + lay.dwcl + ptrdiff_t(o) * KH * RW;
            T acc[KH][NV];
            LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[r][v] = V::load(dwo + r * RW + v * 16);
            for (int i = 0; i < n; ++i) {
                const float* xp = xl + ptrdiff_t(at_nz[i]);
                const T g = V::set1(gw_nz[i]);
                LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
                    LENET_TILE_LOOP for (int v = 0; v < NV; ++v)
                        acc[r][v] = V::fmadd(g, V::load(xp + r * row + v * 16), acc[r][v]);
            }
            LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v) V::store(dwo + r * RW + v * 16, acc[r][v]);
        }
    }
}

template <class V>
void conv_pool_dw_sparse(const ConvShape* s, const float* xpad, const float* argmax, const float* dy, float* dw,
                         float* db, float* work) {
    constexpr int L = 16, RW = 32;
    const ConvPoolDwSparseWork lay = conv_pool_dw_sparse_work(s);  // the scratch's arrays (kernels.h)
    const int ic = s->ic, kh = s->kh, kw = s->kw, xw = s->ow + kw - 1;
    const ptrdiff_t plane = ptrdiff_t(s->oh + kh - 1) * xw;
    float* xcl = work + lay.xcl;
    // xpad [ic][xh][xw][L] -> xcl [L][xh][xw][ic]
    for (int l = 0; l < L; ++l)
        for (ptrdiff_t p = 0; p < plane; ++p)
            for (int c = 0; c < ic; ++c) xcl[l * lay.sample + p * ic + c] = xpad[(c * plane + p) * L + l];
    std::memset(xcl + L * lay.sample, 0, RW * sizeof(float));  // read by the last patch's unused lanes
    pooled_entries<V>(s, argmax, dy, xw, ic, lay.entries, work + lay.at, work + lay.gw, work + lay.at_l,
                      work + lay.gw_l);
    std::memset(work + lay.dwcl, 0, size_t(s->oc) * kh * RW * sizeof(float));
    with_size<5>(kh, [&](auto k) { sparse_dw_rows<V, decltype(k)::value>(s, lay, work); });
    const float* dwcl = work + lay.dwcl;
    for (int o = 0; dw && o < s->oc; ++o)
        for (int c = 0; c < ic; ++c)
            for (int r = 0; r < kh; ++r)
                for (int kx = 0; kx < kw; ++kx)
                    dw[((o * ic + c) * kh + r) * kw + kx] = dwcl[(o * kh + r) * RW + kx * ic + c];
    pooled_bias_grad<V>(s->oc, int(lay.windows), work + lay.gw, db);
}

template <class V> constexpr decltype(KernelTable::conv_pool_dw_sparse) sparse_pool_dw_slot() {
    if constexpr (has_sparse_pool_backward<V>()) return conv_pool_dw_sparse<V>;
    else return nullptr;
}

template <class V> constexpr decltype(KernelTable::conv_pool_bwd_sparse) sparse_pool_backward_slot() {
    if constexpr (has_sparse_pool_backward<V>()) return conv_pool_bwd_sparse<V>;
    else return nullptr;
}

}  // namespace
}  // namespace lenet::simd
