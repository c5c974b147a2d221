// Pooling over one lane block [c][h][w][L], vectorised along the lanes (the samples).
#pragma once
#include <stddef.h>

#include "../kernels.h"
#include "../ref/ref.h"
#include "tile.h"

namespace lenet::simd {
namespace {

// Calls f(c, out_offset, in_offset_of_window_origin, l0, n) for every output pixel and lane chunk of n lanes.
template <class V, class F>
void pool_for_each(const ConvShape* s, F&& f) {
    const int L = s->lanes;
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy) {
            const ptrdiff_t o_row = (ptrdiff_t(c) * s->oh + oy) * s->ow * L;
            const ptrdiff_t i_row = (ptrdiff_t(c) * s->ih + oy * s->sh) * s->iw * L;
            for (int ox = 0; ox < s->ow; ++ox) {
                const ptrdiff_t o = o_row + ptrdiff_t(ox) * L, i = i_row + ptrdiff_t(ox) * s->sw * L;
                for (int l0 = 0; l0 < L; l0 += V::W) f(o + l0, i + l0, L - l0 < V::W ? L - l0 : V::W);
            }
        }
}

// Fewer lanes than half a vector (one sample at a time): the plain loops beat masked vectors.
template <class V> bool few_lanes(const ConvShape* s) { return s->lanes * 2 < V::W; }

template <class V> typename V::T load_lanes(const float* p, int n) { return n == V::W ? V::load(p) : V::load_n(p, n); }
template <class V> void store_lanes(float* p, typename V::T v, int n) {
    if (n == V::W) V::store(p, v);
    else V::store_n(p, v, n);
}

// One sample (lanes 1), forward (the inference path): per output row, the max over the window's rows is taken
// along the whole input row in vectors, then the max over the window's columns from that one row.
template <class V>
void maxpool_one_sample(const ConvShape* s, const float* x, float* y, int relu) {
    constexpr int kMaxRow = 1024;
    if (s->iw > kMaxRow) return ref::maxpool_fwd(s, x, y, relu);
    float rows[kMaxRow];
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy) {
            const float* in = x + (ptrdiff_t(c) * s->ih + oy * s->sh) * s->iw;
            for (int i = 0; i < s->iw; i += V::W) {
                const int n = s->iw - i < V::W ? s->iw - i : V::W;
                typename V::T m = load_lanes<V>(in + i, n);
                for (int ky = 1; ky < s->kh; ++ky) m = V::max(m, load_lanes<V>(in + ky * s->iw + i, n));
                store_lanes<V>(rows + i, m, n);
            }
            float* out = y + (ptrdiff_t(c) * s->oh + oy) * s->ow;
            for (int ox = 0; ox < s->ow; ++ox) {
                const float* win = rows + ox * s->sw;
                float best = win[0];
                for (int kx = 1; kx < s->kw; ++kx) best = win[kx] > best ? win[kx] : best;
                out[ox] = relu && best < 0.0f ? 0.0f : best;
            }
        }
}

// 2x2 windows of stride 2 over whole vectors of lanes: the training blocks, as both LeNets pool. Their pooling runs
// with the window size known at compile time (K = 2 below): the loads of a window unrolled, no lane count checked
// per load, and in the backward one plain store per input position (the windows do not overlap; positions no
// window covers, an odd last row or column, stay as the caller zeroed them).
template <class V> bool pool2x2_whole_vectors(const ConvShape* s) {
    return s->kh == 2 && s->kw == 2 && s->sh == 2 && s->sw == 2 && s->lanes % V::W == 0;
}

// Max pooling of K x K windows at stride K over whole vectors of lanes (K > 0), or of any window, stride and lane
// count (K == 0). The window loops are unrolled: whole for K = 2, by 4 otherwise.
#define LENET_WINDOW_LOOP _Pragma("GCC unroll 4")
template <class V, int K>
void maxpool_fwd_windows(const ConvShape* s, const float* x, float* y, int relu) {
    const int kh = K ? K : s->kh, kw = K ? K : s->kw;
    const ptrdiff_t rowstep = ptrdiff_t(s->iw) * s->lanes, colstep = s->lanes;
    pool_for_each<V>(s, [&](ptrdiff_t o, ptrdiff_t i, int lanes) {
        const int n = K ? V::W : lanes;
        typename V::T best = load_lanes<V>(x + i, n);
        LENET_WINDOW_LOOP for (int ky = 0; ky < kh; ++ky)
            LENET_WINDOW_LOOP for (int kx = ky ? 0 : 1; kx < kw; ++kx)
                best = V::max(best, load_lanes<V>(x + i + ky * rowstep + kx * colstep, n));
        store_lanes<V>(y + o, relu ? V::max(best, V::zero()) : best, n);
    });
}

// dx (+)= dy at the first window position equal to the max (same tie rule as the reference): a plain store where
// the windows tile the input (or K > 0: they do not overlap), else added to dx as the caller zeroed it.
template <class V, int K>
void maxpool_bwd_windows(const ConvShape* s, const float* x, const float* y, const float* dy, float* dx, int relu) {
    const int kh = K ? K : s->kh, kw = K ? K : s->kw;
    const ptrdiff_t rowstep = ptrdiff_t(s->iw) * s->lanes, colstep = s->lanes;
    const bool store = K || pool_windows_tile(s);
    pool_for_each<V>(s, [&](ptrdiff_t o, ptrdiff_t i, int lanes) {
        const int n = K ? V::W : lanes;
        const typename V::T yv = load_lanes<V>(y + o, n), g = load_lanes<V>(dy + o, n), z = V::zero();
        typename V::M taken = relu ? V::mandnot(V::gt(yv, z), V::eq(z, z)) : V::mnone();  // y <= 0: no gradient
        LENET_WINDOW_LOOP for (int ky = 0; ky < kh; ++ky)
            LENET_WINDOW_LOOP for (int kx = 0; kx < kw; ++kx) {
                const ptrdiff_t at = i + ky * rowstep + kx * colstep;
                const typename V::M hit = V::mandnot(taken, V::eq(load_lanes<V>(x + at, n), yv));
                const typename V::T share = V::select(hit, g, z);
                store_lanes<V>(dx + at, store ? share : V::add(load_lanes<V>(dx + at, n), share), n);
                taken = V::mor(taken, hit);
            }
    });
}

template <class V>
void maxpool_fwd(const ConvShape* s, const float* x, float* y, int relu) {
    if (s->lanes == 1) return maxpool_one_sample<V>(s, x, y, relu);
    if (pool2x2_whole_vectors<V>(s)) return maxpool_fwd_windows<V, 2>(s, x, y, relu);
    if (few_lanes<V>(s)) return ref::maxpool_fwd(s, x, y, relu);
    maxpool_fwd_windows<V, 0>(s, x, y, relu);
}

template <class V>
void maxpool_bwd(const ConvShape* s, const float* x, const float* y, const float* dy, float* dx, int relu) {
    if (pool2x2_whole_vectors<V>(s)) return maxpool_bwd_windows<V, 2>(s, x, y, dy, dx, relu);
    if (few_lanes<V>(s)) return ref::maxpool_bwd(s, x, y, dy, dx, relu);
    maxpool_bwd_windows<V, 0>(s, x, y, dy, dx, relu);
}

template <class V>
void avgpool_fwd(const ConvShape* s, const float* x, float* y) {
    if (few_lanes<V>(s)) return ref::avgpool_fwd(s, x, y);
    const ptrdiff_t rowstep = ptrdiff_t(s->iw) * s->lanes, colstep = s->lanes;
    const typename V::T inv = V::set1(1.0f / float(s->kh * s->kw));
    pool_for_each<V>(s, [&](ptrdiff_t o, ptrdiff_t i, int n) {
        typename V::T acc = V::zero();
        for (int ky = 0; ky < s->kh; ++ky)
            for (int kx = 0; kx < s->kw; ++kx) acc = V::add(acc, load_lanes<V>(x + i + ky * rowstep + kx * colstep, n));
        store_lanes<V>(y + o, V::mul(acc, inv), n);
    });
}

template <class V>
void avgpool_bwd(const ConvShape* s, const float* dy, float* dx) {
    if (few_lanes<V>(s)) return ref::avgpool_bwd(s, dy, dx);
    const ptrdiff_t rowstep = ptrdiff_t(s->iw) * s->lanes, colstep = s->lanes;
    const bool tile = pool_windows_tile(s);
    const typename V::T inv = V::set1(1.0f / float(s->kh * s->kw));
    pool_for_each<V>(s, [&](ptrdiff_t o, ptrdiff_t i, int n) {
        const typename V::T g = V::mul(load_lanes<V>(dy + o, n), inv);
        for (int ky = 0; ky < s->kh; ++ky)
            for (int kx = 0; kx < s->kw; ++kx) {
                float* p = dx + i + ky * rowstep + kx * colstep;
                store_lanes<V>(p, tile ? g : V::add(load_lanes<V>(p, n), g), n);
            }
    });
}

}  // namespace
}  // namespace lenet::simd
