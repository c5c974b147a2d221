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

// NV vectors of 16 input channels; 2x2 kernels (TAPS = 4).
template <class V, int NV>
LENET_TILE_FUNCTION
void conv_pool_bwd_sparse_nv(const ConvShape* s, const float* x, const float* w, const float* argmax, const float* dy,
                             float* dw, float* db, float* dx, float* work) {
    using T = typename V::T;
    constexpr int L = 16, IC = 16 * NV, TAPS = 4;
    const ConvPoolSparseWork lay = conv_pool_sparse_work(s);  // the scratch's arrays (kernels.h)
    const int oc = s->oc, iw = s->iw, nwin = int(lay.windows), out_w = s->ow / 2;
    const ptrdiff_t plane = ptrdiff_t(s->ih) * iw, sample = plane * IC, entries = lay.entries;
    float *xcl = work + lay.xcl, *dxcl = work + lay.dxcl, *at = work + lay.at, *gw = work + lay.gw;
    float *at_l = work + lay.at_l, *gw_l = work + lay.gw_l, *at_nz = work + lay.at_nz, *gw_nz = work + lay.gw_nz;
    float *wcl = work + lay.wcl, *dwcl = work + lay.dwcl;

    for (int v = 0; v < NV; ++v)
        for (ptrdiff_t p = 0; p < plane; ++p)
            V::transpose16(x + (v * 16 * plane + p) * L, plane * L, xcl + p * IC + v * 16, sample);
    for (ptrdiff_t e = 0; e < entries; ++e) {  // window position d wins: row 2 py + d / 2, column 2 px + d % 2
        if (e >= ptrdiff_t(oc) * nwin) {       // padding up to whole 16x16 transposes
            V::store(at + e * L, V::zero());
            V::store(gw + e * L, V::zero());
            continue;
        }
        const int w0 = int(e % nwin);
        const T a = V::load(argmax + e * L), d = V::max(a, V::zero());
        const T down = V::select(V::gt(d, V::set1(1.5f)), V::set1(1.0f), V::zero());
        const float base = float((2 * (w0 / out_w) * iw + 2 * (w0 % out_w)) * IC);
        V::store(at + e * L, V::add(V::set1(base), V::mul(V::add(V::mul(down, V::set1(float(iw - 2))), d),
                                                          V::set1(float(IC)))));
        V::store(gw + e * L, V::select(V::eq(a, V::set1(-1.0f)), V::zero(), V::load(dy + e * L)));
    }
    for (ptrdiff_t e = 0; e < entries; e += 16) {
        V::transpose16(at + e * L, L, at_l + e, entries);
        V::transpose16(gw + e * L, L, gw_l + e, entries);
    }
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
            // This sample's nonzero gradients of channel o, in window order (the ReLU zeroes many: none reach dW, dX)
            const float* ga = gw_l + l * entries + ptrdiff_t(o) * nwin;
            const float* aa = at_l + l * entries + ptrdiff_t(o) * nwin;
            int n = 0;
            for (int i = 0; i < nwin; i += 16) {
                const int k = nwin - i < 16 ? nwin - i : 16;
                const T g = V::load_n(ga + i, k);
                const typename V::M nz = V::mandnot(V::eq(g, V::zero()), V::first(k));
                V::compress(at_nz + n, V::load_n(aa + i, k), nz);
                n += V::compress(gw_nz + n, g, nz);
            }
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
    for (int o = 0; db && o < oc; ++o) {
        T sum = V::zero();
        for (int i = 0; i < nwin; ++i) sum = V::add(sum, V::load(gw + (ptrdiff_t(o) * nwin + i) * L));
        db[o] = V::hsum(sum);
    }
}

template <class V>
void conv_pool_bwd_sparse(const ConvShape* s, const float* x, const float* w, const float* argmax, const float* dy,
                          float* dw, float* db, float* dx, float* work) {
    if (s->ic == 32) conv_pool_bwd_sparse_nv<V, 2>(s, x, w, argmax, dy, dw, db, dx, work);
    else conv_pool_bwd_sparse_nv<V, 1>(s, x, w, argmax, dy, dw, db, dx, work);
}

template <class V> constexpr decltype(KernelTable::conv_pool_bwd_sparse) sparse_pool_backward_slot() {
    if constexpr (has_sparse_pool_backward<V>()) return conv_pool_bwd_sparse<V>;
    else return nullptr;
}

}  // namespace
}  // namespace lenet::simd
