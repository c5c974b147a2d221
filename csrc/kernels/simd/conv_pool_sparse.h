// The backward of a convolution fused with a 2x2 max pooling through the pooling's sparsity (kernels.h:
// conv_pool_bwd_sparse). Only the window position that won the pooling gets a gradient, so of the convolution's
// outputs a quarter take part in dW and dX, and none where the ReLU zeroed the pooled output. With the samples in the
// lanes every position would have to be computed (each lane's winner differs); here each sample is taken alone,
// with a kernel row across the input channels in the vectors: x and dx transposed to channels-last; each output
// channel's nonzero gradients compressed with their winning positions; then per gradient one broadcast times the
// input rows at that position into dW's registers, and times the weights' rows into dX there. The
// MNIST-CoreML-Training graph's 32 -> 32 2x2 layer (four vectors a row), one block on one thread of the Intel VM:
// 170 us (before the compression, on random data with few zeros) against 280 us for routing the gradient, the direct
// dW and the Winograd dX (bench/experiments.md). LeNet-5's 6 -> 16 5x5 layer (two vectors a row, their last two
// lanes unused): its dW, one block on one thread of the AMD Zen 4 VM, 42 us against the direct kernel's 86.
// AVX-512, and AVX2 (sparse_row_sums: one kernel row at a time in its 16 registers, 16x16 transposes in 8x8 blocks,
// the nonzero gradients picked a float at a time): LeNet-5's training step on AVX2 2131 -> 1691 us on one thread,
// 1090 -> 792 us on two, against its convolution and pooling apart (graph.cpp: fuse_conv_pool).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <cstring>

#include "../kernels.h"
#include "tile.h"

namespace lenet::simd {
namespace {

template <class V> constexpr bool has_sparse_pool_backward() { return V::W == 16 || V::W == 8; }

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
    for (ptrdiff_t e = 0; e < entries; ++e)  // window position d wins: row 2 py + d / 2, column 2 px + d % 2
        for (int h = 0; h < L; h += V::W) {     // the lanes, a vector at a time
            const ptrdiff_t i = e * L + h;
            if (e >= s->oc * nwin) {             // padding up to whole 16x16 transposes
                V::store(at + i, V::zero());
                V::store(gw + i, V::zero());
                continue;
            }
            const int w0 = int(e % nwin);
            const T a = V::load(argmax + i), d = V::max(a, V::zero());
            const T down = V::select(V::gt(d, V::set1(1.5f)), V::set1(1.0f), V::zero());
            const float base = float((2 * (w0 / out_w) * width + 2 * (w0 % out_w)) * channels);
            V::store(at + i, V::add(V::set1(base), V::mul(V::add(V::mul(down, V::set1(float(width - 2))), d),
                                                          V::set1(float(channels)))));
            V::store(gw + i, V::select(V::eq(a, V::set1(-1.0f)), V::zero(), V::load(dy + i)));
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
    if constexpr (V::W == 16) {
        for (int i = 0; i < nwin; i += 16) {
            const int k = nwin - i < 16 ? nwin - i : 16;
            const typename V::T g = V::load_n(ga + i, k);
            const typename V::M nz = V::mandnot(V::eq(g, V::zero()), V::first(k));
            V::compress(at_nz + n, V::load_n(aa + i, k), nz);
            n += V::compress(gw_nz + n, g, nz);
        }
    } else {  // without a compress instruction, a float at a time (as V::eq: -0 is 0, NaN is not)
        for (int i = 0; i < nwin; ++i)
            if (!(ga[i] == 0.0f)) at_nz[n] = aa[i], gw_nz[n++] = ga[i];
    }
    return n;
}

// db [oc] = the sum of gw (pooled_entries') over the windows and lanes of each output channel.
template <class V>
void pooled_bias_grad(int oc, int nwin, const float* gw, float* db) {
    for (int o = 0; db && o < oc; ++o) {
        typename V::T sum = V::zero();
        for (int i = 0; i < nwin; ++i)
            for (int h = 0; h < 16; h += V::W) sum = V::add(sum, V::load(gw + (ptrdiff_t(o) * nwin + i) * 16 + h));
        db[o] = V::hsum(sum);
    }
}

// The layout change between a block [c][plane][L] and channels-last [L][sample] (pixel p's channels from
// p * channels; sample: floats per lane), either way: kToLast, or back. In 16x16 transposes where the channels fill
// whole vectors, else one float at a time.
template <class V, bool kToLast>
__attribute__((noinline)) void channels_last_transpose(const float* src, int channels, ptrdiff_t plane,
                                                       ptrdiff_t sample, float* dst) {
    constexpr int L = 16;
    if (channels % 16 == 0) {
        for (int v = 0; v < channels / 16; ++v)
            for (ptrdiff_t p = 0; p < plane; ++p) {
                const ptrdiff_t planar = (v * 16 * plane + p) * L, last = p * channels + v * 16;
                if constexpr (kToLast) V::transpose16(src + planar, plane * L, dst + last, sample);
                else V::transpose16(src + last, sample, dst + planar, plane * L);
            }
        return;
    }
    for (ptrdiff_t p = 0; p < plane; ++p)
        for (int c = 0; c < channels; ++c)
            for (int l = 0; l < L; ++l) {
                const ptrdiff_t planar = (c * plane + p) * L + l, last = l * sample + p * channels + c;
                if constexpr (kToLast) dst[last] = src[planar];
                else dst[planar] = src[last];
            }
}

// The layout change between weights [oc][ic][kh][kw] and kernel rows channels-last [oc][kh][row] (column kx's
// channels from kx * ic; the rest of a row untouched), either way: kToRows, or back.
template <bool kToRows>
void weight_rows(const ConvShape* s, ptrdiff_t row, const float* src, float* dst) {
    for (int o = 0; o < s->oc; ++o)
        for (int c = 0; c < s->ic; ++c)
            for (int r = 0; r < s->kh; ++r)
                for (int kx = 0; kx < s->kw; ++kx) {
                    const ptrdiff_t oihw = ((ptrdiff_t(o) * s->ic + c) * s->kh + r) * s->kw + kx;
                    const ptrdiff_t rows = (ptrdiff_t(o) * s->kh + r) * row + kx * s->ic + c;
                    if constexpr (kToRows) dst[rows] = src[oihw];
                    else dst[oihw] = src[rows];
                }
}

// The sums' outer loops: each sample, each output channel with nonzero gradients there, fn(xl, dxl, o, n) with the
// sample's x and dx channels-last and the n gradients and their offsets in work's at_nz and gw_nz. Forced inline,
// fn too: gcc called the sums' lambdas (LeNet-5's step on AVX-512 930 -> 967 us, one thread, 8 interleaved pairs).
template <class V, class Fn>
LENET_INLINE inline void for_each_nonzero_channel(const ConvShape* s, const ConvPoolSparseWork& lay, float* work,
                                                  Fn&& fn) {
    const int nwin = int(lay.windows);
    for (int l = 0; l < 16; ++l) {
        const float* xl = work + lay.xcl + l * lay.sample;
        float* dxl = work + lay.dxcl + l * lay.sample;
        for (int o = 0; o < s->oc; ++o) {
            const ptrdiff_t entry = l * lay.entries + ptrdiff_t(o) * nwin;
            const int n = nonzero_gradients<V>(work + lay.at_l + entry, work + lay.gw_l + entry, nwin,
                                               work + lay.at_nz, work + lay.gw_nz);
            if (n > 0) fn(xl, dxl, o, n);
        }
    }
}

// The sums, one sample at a time: KH kernel rows of NV vectors each (work laid out by conv_pool_sparse_work; dwcl
// and, with dx, dxcl zeroed and wcl filled by the caller). Per output channel, its rows of dW in registers, and of
// the weights with dx.
template <class V, int NV, int KH>
LENET_TILE_FUNCTION LENET_ONE_LOOP void sparse_sums(const ConvShape* s, const ConvPoolSparseWork& lay, bool with_dx,
                                                    float* work) {
    using T = typename V::T;
    constexpr int RW = 16 * NV;
    const ptrdiff_t row = ptrdiff_t(s->ow + s->kw - 1) * s->ic;  // an input row, channels-last
    const float *at_nz = work + lay.at_nz, *gw_nz = work + lay.gw_nz;
    for_each_nonzero_channel<V>(s, lay, work, [&](const float* xl, float* dxl, int o, int n) LENET_INLINE {
        float* dwo = work + lay.dwcl + ptrdiff_t(o) * KH * RW;
        const float* wo = work + lay.wcl + ptrdiff_t(o) * KH * RW;
        T acc[KH][NV], wv[KH][NV];
        LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
            LENET_TILE_LOOP for (int v = 0; v < NV; ++v) {
                acc[r][v] = V::load(dwo + r * RW + v * 16);
                wv[r][v] = with_dx ? V::load(wo + r * RW + v * 16) : V::zero();
            }
        for (int i = 0; i < n; ++i) {
            const ptrdiff_t q = ptrdiff_t(at_nz[i]);
            const T g = V::set1(gw_nz[i]);
            LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v)
                    acc[r][v] = V::fmadd(g, V::load(xl + q + r * row + v * 16), acc[r][v]);
            if (with_dx)
                LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
                    LENET_TILE_LOOP for (int v = 0; v < NV; ++v) {
                        float* d = dxl + q + r * row + v * 16;
                        V::store(d, V::fmadd(g, wv[r][v], V::load(d)));
                    }
        }
        LENET_TILE_LOOP for (int r = 0; r < KH; ++r)
            LENET_TILE_LOOP for (int v = 0; v < NV; ++v) V::store(dwo + r * RW + v * 16, acc[r][v]);
    });
}

// The same sums with 8-float vectors (AVX2: 16 registers, too few for every kernel row of dW and of the weights at
// once): one kernel row of NV vectors at a time, its dW in registers, the weights read from work with each gradient.
template <class V, int NV>
LENET_TILE_FUNCTION LENET_ONE_LOOP void sparse_row_sums(const ConvShape* s, const ConvPoolSparseWork& lay,
                                                        bool with_dx, float* work) {
    using T = typename V::T;
    constexpr int RW = V::W * NV;
    const int kh = s->kh;
    const ptrdiff_t row = ptrdiff_t(s->ow + s->kw - 1) * s->ic;  // an input row, channels-last
    const float *at_nz = work + lay.at_nz, *gw_nz = work + lay.gw_nz;
    for_each_nonzero_channel<V>(s, lay, work, [&](const float* xl, float* dxl, int o, int n) LENET_INLINE {
        for (int r = 0; r < kh; ++r) {
            float* dwr = work + lay.dwcl + (ptrdiff_t(o) * kh + r) * RW;
            const float* wr = work + lay.wcl + (ptrdiff_t(o) * kh + r) * RW;
            T acc[NV];
            LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[v] = V::load(dwr + v * V::W);
            for (int i = 0; i < n; ++i) {
                const ptrdiff_t q = ptrdiff_t(at_nz[i]) + r * row;
                const T g = V::set1(gw_nz[i]);
                LENET_TILE_LOOP for (int v = 0; v < NV; ++v) acc[v] = V::fmadd(g, V::load(xl + q + v * V::W), acc[v]);
                if (with_dx)
                    LENET_TILE_LOOP for (int v = 0; v < NV; ++v) {
                        float* d = dxl + q + v * V::W;
                        V::store(d, V::fmadd(g, V::load(wr + v * V::W), V::load(d)));
                    }
            }
            LENET_TILE_LOOP for (int v = 0; v < NV; ++v) V::store(dwr + v * V::W, acc[v]);
        }
    });
}

template <class V>
void conv_pool_bwd_sparse(const ConvShape* s, const float* xpad, const float* w, const float* argmax, const float* dy,
                          float* dw, float* db, float* dx, float* work) {
    constexpr int L = 16;
    const ConvPoolSparseWork lay = conv_pool_sparse_work(s);  // the scratch's arrays (kernels.h)
    const int ic = s->ic, kh = s->kh, kw = s->kw, xw = s->ow + kw - 1, nv = int(lay.row / 16);
    const ptrdiff_t plane = ptrdiff_t(s->oh + kh - 1) * xw, weights = ptrdiff_t(s->oc) * kh * lay.row;
    float *xcl = work + lay.xcl, *dxcl = work + lay.dxcl, *wcl = work + lay.wcl, *dwcl = work + lay.dwcl;
    channels_last_transpose<V, true>(xpad, ic, plane, lay.sample, xcl);
    std::memset(xcl + L * lay.sample, 0, size_t(lay.row) * sizeof(float));  // read by the last row's unused lanes
    pooled_entries<V>(s, argmax, dy, xw, ic, lay.entries, work + lay.at, work + lay.gw, work + lay.at_l,
                      work + lay.gw_l);
    std::memset(dwcl, 0, size_t(weights) * sizeof(float));
    if (dx) {
        std::memset(dxcl, 0, size_t(L * lay.sample + lay.row) * sizeof(float));
        std::memset(wcl, 0, size_t(weights) * sizeof(float));  // the unused lanes add zero to dx
        weight_rows<true>(s, lay.row, w, wcl);
    }
    if constexpr (V::W == 8) {
        if (nv == 4) sparse_row_sums<V, 8>(s, lay, dx != nullptr, work);
        else sparse_row_sums<V, 4>(s, lay, dx != nullptr, work);
    } else if (nv == 4) {
        sparse_sums<V, 4, 2>(s, lay, dx != nullptr, work);
    } else {
        with_size<5>(kh, [&](auto k) { sparse_sums<V, 2, decltype(k)::value>(s, lay, dx != nullptr, work); });
    }
    if (dx) channels_last_transpose<V, false>(dxcl, ic, plane, lay.sample, dx);  // no padding with dx: one plane
    if (dw) weight_rows<false>(s, lay.row, dwcl, dw);
    pooled_bias_grad<V>(s->oc, int(lay.windows), work + lay.gw, db);
}

template <class V> constexpr decltype(KernelTable::conv_pool_bwd_sparse) sparse_pool_backward_slot() {
    if constexpr (has_sparse_pool_backward<V>()) return conv_pool_bwd_sparse<V>;
    else return nullptr;
}

}  // namespace
}  // namespace lenet::simd
